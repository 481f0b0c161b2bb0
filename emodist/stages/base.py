"""What every pipeline stage shares: input-column checks and per-clip error capture.

A stage is a class that Ray Data instantiates once per actor (`__init__` loads
models) and calls on numpy batches. A clip that fails in a stage is not dropped: its
row gets `error_stage`, `error_type`, `error_message`, and later stages pass it
through untouched, so the writer turns it into exactly one failure row.
"""
from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

from emodist import schema as col
from emodist.errors import ClipError  # noqa: F401 - re-exported for stages

log = logging.getLogger(__name__)

Batch = dict[str, np.ndarray]


def set_torch_threads(num_cpus: float) -> None:
    """One torch thread per CPU the actor was given: more threads than cores spin."""
    import torch

    torch.set_num_threads(max(1, int(num_cpus)))


def object_column(values: list[Any]) -> np.ndarray:
    """A 1-D object array, even when the values are equal-shaped arrays or lists."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def ok_rows(batch: Batch) -> np.ndarray:
    """Indices of rows that no earlier stage marked as failed."""
    return np.flatnonzero(batch[col.ERROR_STAGE] == "")


def ensure_error_columns(batch: Batch) -> Batch:
    n = len(batch[col.CLIP_ID])
    for name in (col.ERROR_STAGE, col.ERROR_TYPE, col.ERROR_MESSAGE):
        if name not in batch:
            batch[name] = np.full(n, "", dtype=object)
        else:
            batch[name] = batch[name].astype(object)
    return batch


def mark_failed(batch: Batch, i: int, stage: str, exc: BaseException) -> None:
    batch[col.ERROR_STAGE][i] = stage
    batch[col.ERROR_TYPE][i] = type(exc).__name__
    msg = str(exc) or repr(exc)
    if not isinstance(exc, ClipError):
        # Unexpected errors keep the innermost frame so a user can report them.
        tb = traceback.extract_tb(exc.__traceback__)
        if tb:
            msg += f" (at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})"
    from emodist.storage import scrub

    uri = batch[col.URI][i]
    batch[col.ERROR_MESSAGE][i] = message = scrub(f"{stage}: {uri}: {msg}")  # no credentials in rows
    log.warning("%s", message)


def maybe_fault(cfg, stage: str, batches_seen: int) -> None:
    """Test-only: fire the configured fault once (run.fault), if it is this stage's turn."""
    import os

    fault = cfg.run.fault
    if fault.stage != stage or batches_seen < fault.after_batches or not fault.marker:
        return
    try:
        fd = os.open(fault.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # fires once, even across actors
    except FileExistsError:
        return
    os.close(fd)
    if fault.kind == "exit":
        log.warning("%s: injected fault: actor exits", stage)
        os._exit(1)
    raise RuntimeError(f"{stage}: injected fault (run.fault)")


class Stage:
    """Base of the pipeline's stage UDFs."""

    batches_seen = 0

    name: ClassVar[str]
    # {column: description} the stage reads; checked on every batch.
    required: ClassVar[Mapping[str, str]] = {col.CLIP_ID: "str", col.URI: "str"}

    def __call__(self, batch: Batch) -> Batch:
        missing = [c for c in self.required if c not in batch]
        if missing:
            raise KeyError(
                f"{self.name}: batch lacks columns {missing} (has {sorted(batch)}); "
                "the stages are wired in the wrong order; please report"
            )
        batch = ensure_error_columns(batch)
        cfg = getattr(self, "cfg", None)
        if cfg is not None and cfg.run.fault.kind == "exit":
            maybe_fault(cfg, self.name, self.batches_seen)
        self.batches_seen += 1
        t0 = time.perf_counter()
        batch = self.process(batch, ok_rows(batch))
        seconds = time.perf_counter() - t0
        n = len(batch[col.CLIP_ID])
        # Per-clip share of the batch's wall time, for the per-stage timings column.
        batch[f"t_{self.name}_s"] = np.full(n, seconds / max(n, 1), dtype=np.float64)
        return batch

    def process(self, batch: Batch, rows: np.ndarray) -> Batch:
        raise NotImplementedError

    def run_isolated(
        self, batch: Batch, rows: np.ndarray, fn: Callable[[np.ndarray], None]
    ) -> None:
        """Run `fn` on all rows at once; if it raises, retry row by row so that one
        bad clip fails alone instead of taking its batch with it."""
        if len(rows) == 0:
            return

        def call(sub: np.ndarray) -> None:
            cfg = getattr(self, "cfg", None)
            if cfg is not None and cfg.run.fault.kind == "raise":
                maybe_fault(cfg, self.name, self.batches_seen - 1)
            fn(sub)

        try:
            call(rows)
            return
        except Exception as exc:  # noqa: BLE001 - isolated per clip below
            if len(rows) == 1:
                mark_failed(batch, int(rows[0]), self.name, exc)
                return
        for i in rows:
            try:
                call(np.array([i]))
            except Exception as exc:  # noqa: BLE001
                mark_failed(batch, int(i), self.name, exc)
