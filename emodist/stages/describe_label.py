"""The describe-and-label stage: both MSCE model steps in one actor, clip by clip (`run.share_model`).

One engine serves both MSCE stages when they use the same model (registry.build_models),
and each clip goes on to labeling as soon as its own gaps are described, not after the
whole batch: the engine always has the next requests waiting. Ray runs several batches
per actor at once (`labeler.batches_in_flight`), so a batch's slow last clip does not
leave the engine idle either.
"""
from __future__ import annotations

import asyncio

import numpy as np

from emodist import schema as col
from emodist.config import Config
from emodist.stages.base import AsyncStage, Batch, set_torch_threads
from emodist.stages.describe import REQUIRED, Describing
from emodist.stages.label import Labeling


_WAITED = "_waited_s"  # per clip: seconds awaiting the describer, the labeler (dropped in _timed)


class DescribeLabelStage(AsyncStage):
    name = "label"
    required = REQUIRED

    def __init__(self, cfg: Config, keep_all_frames: bool = False, models=None):
        from emodist.models.registry import Models, build_models

        set_torch_threads(cfg.labeler.num_cpus)
        self.models = models or Models(cfg)
        describer, labeler = build_models(cfg, models=self.models)
        self.describing = Describing(cfg, describer, keep_all_frames)
        self.labeling = Labeling(cfg, labeler)

    async def process(self, batch: Batch, rows: np.ndarray) -> Batch:
        described, labeled = self.describing.start(batch), self.labeling.start(batch)

        async def one(i: int) -> None:
            if await self.guard(batch, i, "describe", self.describing.clip(batch, i, described)):
                await self.guard(batch, i, "label", self.labeling.clip(
                    batch, i, labeled, described.descriptions[i], described.spans[i]))

        await asyncio.gather(*(one(int(i)) for i in rows))
        batch = self.labeling.finish(self.describing.finish(batch, described), labeled)
        batch[_WAITED] = np.stack([described.seconds, labeled.seconds], axis=1)
        return batch

    def _timed(self, batch: Batch, seconds: float) -> Batch:
        """The batch's share of the actor's time, split over its clips and between
        describing and labeling in proportion to the time each clip waited on each."""
        waited = batch.pop(_WAITED)
        d, lab = waited[:, 0], waited[:, 1]
        total = float(d.sum() + lab.sum())
        n = len(batch[col.CLIP_ID])
        for name, part in (("describe", d), ("label", lab)):
            batch[f"t_{name}_s"] = (part / total * seconds if total > 0 else np.full(n, seconds / max(n, 1) / 2))
        return batch
