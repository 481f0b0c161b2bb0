"""Describe stage (MSCE stage 1, motion-to-text): one short text per gap, from the
gap's in-between frames. Keyframes pass on; in-between frames are dropped here unless
the labeler wants every frame, so they never travel further than they must."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from emodist import schema as col
from emodist.config import Config
from emodist.models.base import Describer, Gap
from emodist.plan import KEYFRAME
from emodist.stages.base import AsyncStage, Batch, object_column, set_torch_threads

REQUIRED = {col.CLIP_ID: "str", col.URI: "str", col.FRAMES: "uint8 (N,H,W,3)",
            col.FRAME_TS: "float64 (N,)", col.FRAME_GAP: "int32 (N,)"}


def gaps_of(clip_id: str, frames: np.ndarray, ts: np.ndarray, gap: np.ndarray) -> list[Gap]:
    kf_ts = ts[gap == KEYFRAME]
    out = []
    for g in range(len(kf_ts) - 1):
        sel = gap == g
        out.append(Gap(clip_id, g, float(kf_ts[g]), float(kf_ts[g + 1]), frames[sel], ts[sel]))
    return out


@dataclass
class Described:
    """One batch's describe outputs, filled clip by clip."""

    descriptions: list[list[str]]
    spans: list[list[list[float]]]
    seconds: list[float] = field(default_factory=list)


class Describing:
    """The describe step on one batch, usable alone (DescribeStage) or chained per clip
    with labeling in one actor (DescribeLabelStage)."""

    def __init__(self, cfg: Config, describer: Describer | None, keep_all_frames: bool):
        self.cfg, self.describer, self.keep_all_frames = cfg, describer, keep_all_frames

    def start(self, batch: Batch) -> Described:
        n = len(batch[col.CLIP_ID])
        return Described([[] for _ in range(n)], [[] for _ in range(n)], [0.0] * n)

    async def clip(self, batch: Batch, i: int, out: Described) -> None:
        """Describe clip i's gaps in one engine call (its gaps batch together)."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        gaps = gaps_of(str(batch[col.CLIP_ID][i]), batch[col.FRAMES][i], batch[col.FRAME_TS][i],
                       batch[col.FRAME_GAP][i])
        out.spans[i] = [[g.start_s, g.end_s] for g in gaps]
        if self.describer is None:  # sparse or dense mode, or describer.backend=none
            return
        # A gap with no in-between frames (plan.inbetween_per_gap=0) has nothing to describe.
        todo = [g for g in gaps if len(g.frames)]
        texts = await self.describer.describe(todo) if todo else []
        if len(texts) != len(todo):
            raise RuntimeError(f"describer returned {len(texts)} texts for {len(todo)} gaps; please report")
        it = iter(texts)
        out.descriptions[i] = [next(it) if len(g.frames) else "" for g in gaps]
        out.seconds[i] = loop.time() - t0

    def finish(self, batch: Batch, out: Described) -> Batch:
        n = len(batch[col.CLIP_ID])
        batch[col.DESCRIPTIONS] = object_column(out.descriptions)
        model_id = self.describer.model_id if self.describer is not None else ""
        batch[col.DESCRIBER_MODEL] = np.full(n, model_id, dtype=object)
        batch[col.GAP_SPANS] = object_column(out.spans)
        if not self.keep_all_frames:
            keep = [batch[col.FRAME_GAP][i] == KEYFRAME for i in range(n)]
            for c in (col.FRAMES, col.FRAME_TS, col.FRAME_GAP):
                batch[c] = object_column([batch[c][i][keep[i]] for i in range(n)])
        return batch


class DescribeStage(AsyncStage):
    """The describe step in a pool of its own (describer and labeler on different models)."""

    name = "describe"
    required = REQUIRED

    def __init__(self, cfg: Config, keep_all_frames: bool = False, describer: Describer | None = None):
        from emodist.models.registry import build_models

        if describer is None:
            set_torch_threads(cfg.describer.num_cpus)
            describer, _ = build_models(cfg, roles=("describer",))
        self.step = Describing(cfg, describer, keep_all_frames)
        self.describer = describer

    async def process(self, batch: Batch, rows: np.ndarray) -> Batch:
        out = self.step.start(batch)
        await asyncio.gather(*(self.guard(batch, int(i), self.name, self.step.clip(batch, int(i), out))
                               for i in rows))
        return self.step.finish(batch, out)
