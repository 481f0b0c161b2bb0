"""What every pipeline stage shares: input-column checks, per-clip error capture, and the
line between a clip's error and a fatal one.

A stage is a class that Ray Data instantiates once per actor (`__init__` loads
models) and calls on numpy batches. A clip that fails in a stage is not dropped: its
row gets `error_stage`, `error_type`, `error_message`, and later stages pass it
through untouched, so the writer turns it into exactly one failure row.

A fatal error (errors.is_fatal: the engine died, the device is in an error state) is
not the clip's fault: inside a Ray actor the process exits, so that Ray restarts the
actor and retries its batches; outside Ray it is raised.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
import traceback
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

import numpy as np
import pyarrow as pa

from emodist import schema as col
from emodist import testing
from emodist.io import rows as source_rows
from emodist.errors import ClipError, is_fatal  # noqa: F401 - ClipError re-exported for stages

log = logging.getLogger(__name__)

Batch = dict[str, np.ndarray]
# Exit status of an actor that stops itself after a fatal engine error (Ray restarts it).
FATAL_EXIT_CODE = 70


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


# The columns that hold bytes, text or lists, never numbers: the source's and the outputs'.
_NOT_NUMBERS = frozenset(f.name for schema in (source_rows.SOURCE, col.PREDICTIONS, col.FAILURES)
                       for f in schema if not (pa.types.is_floating(f.type) or pa.types.is_integer(f.type)))


def restore_nulls(batch: Batch) -> Batch:
    """Columns of nulls back to object Nones. A column that was all None in one stage's
    batch is an Arrow null column in its block, and Ray hands it to the next stage as
    float NaNs; passed on, it would leave that stage as floats, which Ray cannot combine
    with a batch whose same column holds bytes or lists ('Unable to merge: Field carried
    has incompatible types: binary vs float' stopped a run: a batch with no failed clip
    next to one carrying them)."""
    for name in _NOT_NUMBERS & batch.keys():
        if batch[name].dtype.kind == "f":
            batch[name] = np.full(len(batch[name]), None, dtype=object)
    return batch


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
    # A bad clip is a failure row, counted in the summary and listed by `emodist show`: not
    # a console line per clip. An unexpected error may be a bug: that one is said.
    log.log(logging.INFO if isinstance(exc, ClipError) else logging.WARNING, "%s", message)


def in_ray_actor() -> bool:
    try:
        import ray

        return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None
    except Exception:  # noqa: BLE001 - no Ray: not an actor
        return False


def die_for(stage: str, exc: BaseException) -> None:
    """A fatal error: exit the actor so that Ray restarts it and retries its batches
    (`run.max_actor_restarts`); outside Ray, raise."""
    if in_ray_actor():
        log.error("%s: fatal %s: %s; the actor exits and Ray restarts it (its batches are retried, "
                  "no clip is marked failed)", stage, type(exc).__name__, exc)
        logging.shutdown()
        os._exit(FATAL_EXIT_CODE)
    raise exc


class _Checked:
    name: ClassVar[str]
    # {column: description} the stage reads; checked on every batch.
    required: ClassVar[Mapping[str, str]] = {col.CLIP_ID: "str", col.URI: "str"}
    batches_seen = 0

    def _check(self, batch: Batch) -> Batch:
        missing = [c for c in self.required if c not in batch]
        if missing:
            raise KeyError(
                f"{self.name}: batch lacks columns {missing} (has {sorted(batch)}); "
                "the stages are wired in the wrong order; please report"
            )
        testing.fault(self.name, "exit", self.batches_seen)
        self.batches_seen += 1
        return ensure_error_columns(restore_nulls(batch))

    def _timed(self, batch: Batch, seconds: float) -> Batch:
        n = len(batch[col.CLIP_ID])
        # Per-clip share of the batch's wall time, for the per-stage timings column.
        batch[f"t_{self.name}_s"] = np.full(n, seconds / max(n, 1), dtype=np.float64)
        return batch


class Stage(_Checked):
    """A CPU stage (decode, face): one batch at a time, clip by clip."""

    def __call__(self, batch: Batch) -> Batch:
        batch = self._check(batch)
        t0 = time.perf_counter()
        batch = self.process(batch, ok_rows(batch))
        return self._timed(batch, time.perf_counter() - t0)

    def process(self, batch: Batch, rows: np.ndarray) -> Batch:
        raise NotImplementedError


class AsyncStage(_Checked):
    """A model stage: a coroutine per batch (Ray runs several per actor), a coroutine per
    clip inside it, so the engine receives each clip's requests as soon as they exist.
    A clip's error fails that clip; a fatal error stops the actor (`die_for`).

    Batches overlap, so a batch's wall time over-counts the actor's work: each batch is
    charged its fair share instead (while k batches are in flight, each accrues 1/k of
    the time), and the shares of all batches add up to the actor's busy time."""

    calls = 0  # model calls so far (for the test hook)
    _active, _fair_clock, _last = 0, 0.0, 0.0

    def _tick(self) -> float:
        now = time.perf_counter()
        if self._active:
            self._fair_clock += (now - self._last) / self._active
        self._last = now
        return self._fair_clock

    async def __call__(self, batch: Batch) -> Batch:
        batch = self._check(batch)
        start = self._tick()
        self._active += 1
        try:
            batch = await self.process(batch, ok_rows(batch))
        except Exception as exc:  # noqa: BLE001 - only fatal errors get here (see guard)
            die_for(self.name, exc)
        finally:
            share = self._tick() - start
            self._active -= 1
        return self._timed(batch, share)

    async def process(self, batch: Batch, rows: np.ndarray) -> Batch:
        raise NotImplementedError

    async def guard(self, batch: Batch, i: int, stage: str, coro) -> bool:
        """Await one clip's work; a clip error marks the clip failed (False), a fatal
        error propagates (the batch, and the actor, stop)."""
        self.calls += 1
        try:
            testing.fault(stage, "raise", self.calls - 1)
            testing.fault(stage, "engine_dead", self.calls - 1)
            await coro
            return True
        except Exception as exc:  # noqa: BLE001 - sorted below
            if is_fatal(exc):
                raise
            mark_failed(batch, i, stage, exc)
            return False
        finally:
            coro.close()  # never awaited when the fault fired first


class Step(Protocol):
    """One model step on a batch, clip by clip (describe.Describing, label.Labeling): the
    same steps run alone in a pool (StepStage) or chained per clip (DescribeLabelStage)."""

    def start(self, batch: Batch) -> Any: ...

    async def clip(self, batch: Batch, i: int, out: Any) -> None: ...

    def finish(self, batch: Batch, out: Any) -> Batch: ...


class StepStage(AsyncStage):
    """A model stage that runs one Step in a pool of its own: every clip of the batch at
    once, a clip's error failing only that clip."""

    step: Step

    async def process(self, batch: Batch, rows: np.ndarray) -> Batch:
        out = self.step.start(batch)
        await asyncio.gather(*(self.guard(batch, int(i), self.name, self.step.clip(batch, int(i), out))
                               for i in rows))
        return self.step.finish(batch, out)
