"""Decode stage: each clip's planned frames at the model's size (emodist.decoders), on
the CPU, or on the GPU with per-clip CPU fallback (`decode.device`; a GPU whose CUDA
context is poisoned stops the actor, which Ray restarts). A clip that cannot be decoded
fails alone, with a message that says what is wrong and what to check, and
travels on packed with the batch's other failures in one carrier row (output/carry.py); the clip
bytes that came out of tar shards (the `data` column) go no further than here."""
from __future__ import annotations

import numpy as np

from emodist import decoders, storage
from emodist.output import carry
from emodist import schema as col
from emodist.config import Config
from emodist.errors import ClipError, is_fatal
from emodist.io.rows import DATA
from emodist.stages.base import Batch, Stage, die_for, mark_failed, object_column


def _as_bytes(value) -> bytes | None:
    """A row's `data` cell as bytes (Arrow may hand out a view), or None for a clip read by uri."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return None


def clip_error(exc: BaseException, uri: str) -> BaseException:
    """The exception to record for a clip: storage errors become ClipErrors that say
    what to check; every message is scrubbed of credentials."""
    if isinstance(exc, ClipError):
        msg = storage.scrub(str(exc))
        return exc if msg == str(exc) else ClipError(msg)
    if isinstance(exc, FileNotFoundError):
        return ClipError("not found: no such file or object (listed but missing?); check the listing or manifest, or restore the clip")
    if isinstance(exc, PermissionError) or (isinstance(exc, OSError) and not storage.is_local(uri)):
        # A local path's explanation starts with the path, which the failure row names already.
        return ClipError(str(storage.explain(exc, uri, "reading")).removeprefix(f"{uri.removeprefix('file://')}: "))
    msg = storage.scrub(str(exc))
    if msg != str(exc):
        return ClipError(f"{type(exc).__name__}: {msg}")
    return exc


class DecodeStage(Stage):
    name = "decode"

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.gpu = None
        if cfg.decode.device == "cuda":
            from emodist.decoders.nvdec import GpuDecoder

            self.gpu = GpuDecoder(cfg)
        self._empty = {
            col.FRAMES: np.zeros((0, cfg.decode.height, cfg.decode.width, 3), np.uint8),
            col.FRAME_TS: np.zeros(0, np.float64),
            col.FRAME_GAP: np.zeros(0, np.int32),
            col.DURATION_S: float("nan"),
            col.NATIVE_FPS: float("nan"),
        }

    def process(self, batch: Batch, rows: np.ndarray) -> Batch:
        n = len(batch[col.CLIP_ID])
        out = {k: [v] * n for k, v in self._empty.items()}
        data = batch.pop(DATA, None)
        devices = ["cpu"] * n
        for i in rows:
            uri = str(batch[col.URI][i])
            clip_bytes = _as_bytes(data[i]) if data is not None else None
            try:
                decoded, devices[i] = decoders.decode(uri, self.cfg, clip_bytes, self.gpu)
            except Exception as exc:  # noqa: BLE001 - one bad clip fails alone
                if is_fatal(exc):  # the GPU's context is gone: every later clip would fail or fall back
                    die_for(self.name, exc)
                mark_failed(batch, int(i), self.name, clip_error(exc, uri))
                continue
            for k, v in decoded.items():
                out[k][i] = v
        for k in (col.FRAMES, col.FRAME_TS, col.FRAME_GAP):
            batch[k] = object_column(out[k])
        batch[col.DURATION_S] = np.asarray(out[col.DURATION_S], dtype=np.float64)
        batch[col.NATIVE_FPS] = np.asarray(out[col.NATIVE_FPS], dtype=np.float64)
        batch[col.DECODE_DEVICE] = np.array(devices, dtype=object)
        # Clips that failed here skip the later stages: one carrier row takes them on.
        return carry.pack_failed(batch, self.name)
