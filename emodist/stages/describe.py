"""Describe stage (MSCE stage 1, motion-to-text): one short text per gap, from the
gap's in-between frames. Keyframes pass on; in-between frames are dropped here unless
the labeler wants every frame, so they never travel further than they must."""
from __future__ import annotations

import numpy as np

from emodist import schema as col
from emodist.config import Config
from emodist.models.base import Describer, Gap
from emodist.plan import KEYFRAME
from emodist.stages.base import Batch, Stage, object_column, set_torch_threads


def gaps_of(clip_id: str, frames: np.ndarray, ts: np.ndarray, gap: np.ndarray) -> list[Gap]:
    kf_ts = ts[gap == KEYFRAME]
    out = []
    for g in range(len(kf_ts) - 1):
        sel = gap == g
        out.append(Gap(clip_id, g, float(kf_ts[g]), float(kf_ts[g + 1]), frames[sel], ts[sel]))
    return out


class DescribeStage(Stage):
    name = "describe"
    required = {col.CLIP_ID: "str", col.URI: "str", col.FRAMES: "uint8 (N,H,W,3)",
                col.FRAME_TS: "float64 (N,)", col.FRAME_GAP: "int32 (N,)"}

    def __init__(self, cfg: Config, keep_all_frames: bool = False, describer: Describer | None = None):
        from emodist.models.registry import build_describer

        self.cfg = cfg
        self.keep_all_frames = keep_all_frames
        if describer is None:
            set_torch_threads(cfg.describer.num_cpus)
            describer = build_describer(cfg)
        self.describer = describer

    def process(self, batch: Batch, rows: np.ndarray) -> Batch:
        n = len(batch[col.CLIP_ID])
        gaps = {
            int(i): gaps_of(str(batch[col.CLIP_ID][i]), batch[col.FRAMES][i],
                            batch[col.FRAME_TS][i], batch[col.FRAME_GAP][i])
            for i in rows
        }
        descriptions: list[list[str]] = [[] for _ in range(n)]
        spans: list[list[list[float]]] = [[[g.start_s, g.end_s] for g in gaps.get(i, [])] for i in range(n)]

        def describe(sub: np.ndarray) -> None:
            # A gap with no in-between frames (plan.inbetween_per_gap=0) has nothing to describe.
            todo = [g for i in sub for g in gaps[int(i)] if len(g.frames)]
            texts = self.describer.describe(todo) if todo else []
            if len(texts) != len(todo):
                raise RuntimeError(f"describer returned {len(texts)} texts for {len(todo)} gaps; please report")
            it = iter(texts)
            for i in sub:
                descriptions[int(i)] = [next(it) if len(g.frames) else "" for g in gaps[int(i)]]

        if self.describer is not None:
            self.run_isolated(batch, rows, describe)
        batch[col.DESCRIPTIONS] = object_column(descriptions)
        model_id = getattr(self.describer, "model_id", "") if self.describer is not None else ""
        batch[col.DESCRIBER_MODEL] = np.full(n, model_id, dtype=object)
        batch[col.GAP_SPANS] = object_column(spans)
        if not self.keep_all_frames:
            keep = [batch[col.FRAME_GAP][i] == KEYFRAME for i in range(n)]
            for c in (col.FRAMES, col.FRAME_TS, col.FRAME_GAP):
                batch[c] = object_column([batch[c][i][keep[i]] for i in range(n)])
        return batch


class DescribeLabelStage:
    """Describe and label in one actor: one model copy when both use the same model,
    and no idle actor when there is nothing to describe (config `run.share_model`)."""

    def __init__(self, cfg: Config, keep_all_frames: bool = False):
        from emodist.models.registry import build_models
        from emodist.stages.label import LabelStage

        set_torch_threads(cfg.labeler.num_cpus)
        describer, labeler = build_models(cfg)
        self.describe = DescribeStage(cfg, keep_all_frames, describer=describer)
        self.label = LabelStage(cfg, labeler=labeler)

    def __call__(self, batch: Batch) -> Batch:
        return self.label(self.describe(batch))
