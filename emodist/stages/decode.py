"""Decode stage: PyAV on CPU, only the frames the temporal plan asks for.

Frames are picked at decode time (the frame on screen at each planned time), and only
picked frames are converted to RGB and resized, in FFmpeg's scaler, to the model's
size. Decoding stops after the last planned time. A clip that cannot be decoded (empty,
not a video, truncated) fails alone with a message that says what is wrong.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from emodist import schema as col
from emodist.config import Config
from emodist.plan import FramePlan, make_plan
from emodist.stages.base import Batch, ClipError, Stage, mark_failed, object_column

# A planned time may fall this far past the last frame's start (it is still on screen).
_EPS_S = 1e-3


def fit_frame(frame, width: int, height: int, fit: str) -> np.ndarray:
    """RGB uint8 (height, width, 3) from an av.VideoFrame, aspect handled by `fit`."""
    if fit == "stretch":
        return frame.to_ndarray(format="rgb24", width=width, height=height)
    scale = (min if fit == "pad" else max)(width / frame.width, height / frame.height)
    w = max(2, int(round(frame.width * scale)))
    h = max(2, int(round(frame.height * scale)))
    img = frame.to_ndarray(format="rgb24", width=w, height=h)
    if fit == "crop":
        y0, x0 = (h - height) // 2, (w - width) // 2
        return np.ascontiguousarray(img[y0 : y0 + height, x0 : x0 + width])
    out = np.zeros((height, width, 3), dtype=np.uint8)
    y0, x0 = (height - h) // 2, (width - w) // 2
    out[y0 : y0 + h, x0 : x0 + w] = img[:height, :width]
    return out


def _open(uri: str):
    """A local path opens directly (seekable, no copy); anything else through fsspec."""
    import av
    import fsspec

    if "://" not in uri or uri.startswith("file://"):
        path = uri.removeprefix("file://")
        size = os.path.getsize(path)
        if size == 0:
            raise ClipError("empty file (0 bytes); re-export or remove the clip")
        return av.open(path, mode="r"), None
    f = fsspec.open(uri, "rb").open()
    if f.size == 0:
        f.close()
        raise ClipError("empty object (0 bytes); re-upload or remove the clip")
    return av.open(f, mode="r"), f


def _duration_s(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    if stream.frames and stream.average_rate:
        return stream.frames / float(stream.average_rate)
    raise ClipError("the container states no duration; remux it (ffmpeg -i in -c copy out.mp4)")


def _frames_at(container, stream, targets: np.ndarray) -> Iterator[tuple[int, object]]:
    """(target index, frame on screen at that time), decoding no further than needed."""
    ti, prev = 0, None
    for frame in container.decode(stream):
        t = frame.time if frame.time is not None else 0.0
        while ti < len(targets) and targets[ti] < t - _EPS_S:
            yield ti, prev if prev is not None else frame
            ti += 1
        if ti == len(targets):
            return
        prev = frame
    if prev is None:
        raise ClipError("no frame could be decoded; the file is damaged")
    end = (prev.time or 0.0) + (prev.duration or 0) * float(prev.time_base or 0) + 0.1
    if targets[-1] > end:
        raise ClipError(
            f"truncated: frames stop at {prev.time:.2f} s but the plan needs a frame at "
            f"{targets[-1]:.2f} s of the declared duration; re-download or re-encode the clip"
        )
    for j in range(ti, len(targets)):
        yield j, prev


def decode_clip(uri: str, cfg: Config) -> dict:
    """Decode one clip by the plan; returns the decode columns of its row."""
    import av

    try:
        container, handle = _open(uri)
    except av.error.FFmpegError as exc:
        raise ClipError(
            f"not a readable video (FFmpeg: {exc.strerror or exc}): truncated, damaged, or not a "
            "video at all; re-download or re-encode it"
        ) from None
    try:
        if not container.streams.video:
            raise ClipError("no video stream; expected a video file")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if cfg.decode.threads:
            stream.codec_context.thread_count = cfg.decode.threads
        fps = float(stream.average_rate or stream.guessed_rate or 25.0)
        duration = _duration_s(container, stream)
        plan: FramePlan = make_plan(cfg.mode, cfg.plan, duration, fps)
        frames = np.empty((len(plan.ts_s), cfg.decode.height, cfg.decode.width, 3), np.uint8)
        last_src, last_img = None, None
        try:
            for i, frame in _frames_at(container, stream, plan.ts_s):
                if frame is not last_src:  # a frame picked twice is converted once
                    last_src = frame
                    last_img = fit_frame(frame, cfg.decode.width, cfg.decode.height, cfg.decode.fit)
                frames[i] = last_img
        except av.error.FFmpegError as exc:
            raise ClipError(f"decoding failed ({exc.strerror or exc}); the file is damaged") from None
        return {
            col.FRAMES: frames,
            col.FRAME_TS: plan.ts_s,
            col.FRAME_GAP: plan.gap,
            col.DURATION_S: duration,
            col.NATIVE_FPS: fps,
        }
    finally:
        container.close()
        if handle is not None:
            handle.close()


class DecodeStage(Stage):
    name = "decode"

    def __init__(self, cfg: Config):
        self.cfg = cfg
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
        for i in rows:
            try:
                decoded = decode_clip(str(batch[col.URI][i]), self.cfg)
            except Exception as exc:  # noqa: BLE001 - one bad clip fails alone
                mark_failed(batch, int(i), self.name, exc)
                continue
            for k, v in decoded.items():
                out[k][i] = v
        for k in (col.FRAMES, col.FRAME_TS, col.FRAME_GAP):
            batch[k] = object_column(out[k])
        batch[col.DURATION_S] = np.asarray(out[col.DURATION_S], dtype=np.float64)
        batch[col.NATIVE_FPS] = np.asarray(out[col.NATIVE_FPS], dtype=np.float64)
        batch[col.DECODE_DEVICE] = np.full(n, "cpu", dtype=object)
        return batch
