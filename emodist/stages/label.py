"""Label stage (MSCE stage 2): a distribution over the label set per clip, its argmax,
and the debiased distribution next to the raw one. Frames end here: the rows that
leave this stage are small enough for the writer."""
from __future__ import annotations

import numpy as np

from emodist import schema as col
from emodist.config import Config
from emodist.models.base import ClipInput
from emodist.plan import KEYFRAME
from emodist.stages.base import Batch, Stage, object_column

DROP = (col.FRAMES, col.FRAME_TS, col.FRAME_GAP)


class LabelStage(Stage):
    name = "label"
    required = {col.CLIP_ID: "str", col.URI: "str", col.FRAMES: "uint8 (N,H,W,3)",
                col.FRAME_TS: "float64 (N,)", col.FRAME_GAP: "int32 (N,)",
                col.DESCRIPTIONS: "list[str]", col.GAP_SPANS: "list[[start, end]]"}

    def __init__(self, cfg: Config):
        from emodist.models.registry import build_labeler

        self.cfg = cfg
        self.labels = cfg.label_names
        self.labeler = build_labeler(cfg)
        self.debias = _RowDebias(cfg)

    def _clip(self, batch: Batch, i: int) -> ClipInput:
        frames, ts, gap = batch[col.FRAMES][i], batch[col.FRAME_TS][i], batch[col.FRAME_GAP][i]
        kf = gap == KEYFRAME
        return ClipInput(
            clip_id=str(batch[col.CLIP_ID][i]), keyframes=frames[kf], keyframe_ts_s=ts[kf],
            descriptions=list(batch[col.DESCRIPTIONS][i]),
            gap_spans_s=[tuple(s) for s in batch[col.GAP_SPANS][i]],
            frames=frames if self.labeler.wants_all_frames else None,
            frame_ts_s=ts if self.labeler.wants_all_frames else None,
        )

    def process(self, batch: Batch, rows: np.ndarray) -> Batch:
        n = len(batch[col.CLIP_ID])
        L = len(self.labels)
        raw = [np.zeros(L)] * n
        answers = [""] * n

        def score(sub: np.ndarray) -> None:
            results = self.labeler.score([self._clip(batch, int(i)) for i in sub], self.labels)
            for i, r in zip(sub, results, strict=True):
                raw[int(i)], answers[int(i)] = r.probs, r.answer

        self.run_isolated(batch, rows, score)
        ok = batch[col.ERROR_STAGE] == ""
        debiased = np.stack(raw) if n else np.zeros((0, L))
        if ok.any():
            debiased[ok] = self.debias(debiased[ok])
        batch[col.PROBS_RAW] = object_column([p.astype(np.float32) for p in raw])
        batch[col.PROBS] = object_column([p.astype(np.float32) for p in debiased])
        batch[col.LABEL] = np.array(
            [self.labels[int(np.argmax(p))] if ok[i] else "" for i, p in enumerate(debiased)], dtype=object
        )
        batch[col.ANSWER] = np.array(answers, dtype=object)
        batch[col.KEYFRAME_TS] = object_column(
            [batch[col.FRAME_TS][i][batch[col.FRAME_GAP][i] == KEYFRAME] for i in range(n)]
        )
        for c in DROP:
            del batch[c]
        return batch


class _RowDebias:
    """The per-row debiasing methods (batch calibration needs the whole run: `emodist eval`)."""

    def __init__(self, cfg: Config):
        self.method = cfg.labeler.debias
        self.cfg = cfg
        if self.method == "logit_adjust":
            L = len(cfg.label_names)
            prior = np.asarray(cfg.labeler.prior or [1.0 / L] * L, dtype=np.float64)
            if len(prior) != L:
                raise ValueError(f"labeler.prior has {len(prior)} values for {L} labels {list(cfg.label_names)}")
            self.prior = prior
        if self.method == "contextual":
            raise NotImplementedError("labeler.debias=contextual is not wired yet")

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        from emodist import debias

        if self.method == "none":
            return probs
        return debias.logit_adjustment(probs, self.prior, self.cfg.labeler.tau)
