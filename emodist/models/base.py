"""The two model roles of the pipeline, behind small protocols.

A *describer* turns the in-between frames of one gap into a short text (MSCE stage 1,
"motion-to-text"). A *labeler* reads a clip's keyframes and descriptions and returns a
probability for every label (MSCE stage 2). Both are coroutines, so a stage can have
many clips in flight at once. The VLM describer and labeler (`vlm.py`, over any engine)
and the vision-only specialists (blocking, wrapped in `InThread`) implement the same
protocols, so the stages never care which.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(slots=True)
class Gap:
    """The in-between frames of one gap between two keyframes: times in [start_s, end_s]."""

    clip_id: str
    index: int
    start_s: float
    end_s: float
    frames: np.ndarray  # uint8 (M, H, W, 3)
    ts_s: np.ndarray  # float64 (M,)
    # bool (M,): a face was found on the frame; None when nobody looked (no face stage).
    face: np.ndarray | None = None


@dataclass(slots=True)
class ClipInput:
    """What a labeler sees of one clip."""

    clip_id: str
    keyframes: np.ndarray  # uint8 (K, H, W, 3)
    keyframe_ts_s: np.ndarray  # float64 (K,)
    descriptions: list[str] = field(default_factory=list)  # one per gap, may be empty
    gap_spans_s: list[tuple[float, float]] = field(default_factory=list)
    # Every decoded frame (keyframes and in-between), for labelers that use dense frames.
    frames: np.ndarray | None = None
    frame_ts_s: np.ndarray | None = None
    # bool per keyframe and per frame of `frames`: a face was found (None: nobody looked,
    # or a clip flagged for having no face at all, labeled on whole frames).
    keyframe_face: np.ndarray | None = None
    frame_face: np.ndarray | None = None


@dataclass(slots=True)
class LabelResult:
    """A labeler's answer for one clip: a distribution over the label set, in its order."""

    probs: np.ndarray  # float64 (L,), sums to 1
    answer: str = ""  # free text the model produced, if any

    def __post_init__(self) -> None:
        p = np.asarray(self.probs, dtype=np.float64)
        if p.ndim != 1 or not np.all(np.isfinite(p)) or np.any(p < 0) or abs(p.sum() - 1) > 1e-4:
            raise ValueError(f"labeler returned an invalid distribution {p!r}; please report")
        self.probs = p


@runtime_checkable
class Describer(Protocol):
    model_id: str

    async def describe(self, gaps: Sequence[Gap]) -> list[str]:
        """One short description per gap, in order."""
        ...


@runtime_checkable
class Labeler(Protocol):
    model_id: str
    # True when the labeler wants every decoded frame in ClipInput.frames.
    wants_all_frames: bool

    async def score(self, clips: Sequence[ClipInput], labels: Sequence[str]) -> list[LabelResult]:
        """One distribution over `labels` per clip, in order."""
        ...


class InThread:
    """A blocking describer or labeler (the specialists) behind the async protocols: its
    calls run one at a time on a thread of its own, so the actor's event loop stays free
    and torch is never entered from two threads at once."""

    def __init__(self, model):
        from concurrent.futures import ThreadPoolExecutor

        self.inner = model
        self.model_id = model.model_id
        self.wants_all_frames = getattr(model, "wants_all_frames", False)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=type(model).__name__)

    async def describe(self, gaps: Sequence[Gap]) -> list[str]:
        import asyncio

        return await asyncio.wrap_future(self._pool.submit(self.inner.describe, gaps))

    async def score(self, clips: Sequence[ClipInput], labels: Sequence[str]) -> list[LabelResult]:
        import asyncio

        return await asyncio.wrap_future(self._pool.submit(self.inner.score, clips, labels))
