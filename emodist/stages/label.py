"""Label stage (MSCE stage 2): a distribution over the label set per clip, its argmax,
and the debiased distribution next to the raw one. Frames end here: the rows that
leave this stage are small enough for the writer."""
from __future__ import annotations

import numpy as np

from emodist import schema as col
from emodist.config import Config
from emodist.models.base import ClipInput, Labeler
from emodist.models.scoring import parse_answer
from emodist.plan import KEYFRAME
from emodist.stages.base import Batch, Stage, object_column, set_torch_threads

DROP = (col.FRAMES, col.FRAME_TS, col.FRAME_GAP)


class LabelStage(Stage):
    name = "label"
    required = {col.CLIP_ID: "str", col.URI: "str", col.FRAMES: "uint8 (N,H,W,3)",
                col.FRAME_TS: "float64 (N,)", col.FRAME_GAP: "int32 (N,)",
                col.DESCRIPTIONS: "list[str]", col.GAP_SPANS: "list[[start, end]]"}

    def __init__(self, cfg: Config, labeler: Labeler | None = None):
        from emodist.models.registry import build_labeler

        self.cfg = cfg
        self.labels = cfg.label_names
        if labeler is None:
            set_torch_threads(cfg.labeler.num_cpus)
            labeler = build_labeler(cfg)
        self.labeler = labeler
        self.debias = _RowDebias(cfg, self.labeler)

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
        debiased = [np.zeros(L)] * n
        answers = [""] * n

        def score(sub: np.ndarray) -> None:
            clips = [self._clip(batch, int(i)) for i in sub]
            results = self.labeler.score(clips, self.labels)
            for i, r, clip in zip(sub, results, clips, strict=True):
                raw[int(i)], answers[int(i)] = r.probs, r.answer
                debiased[int(i)] = self.debias(r.probs, clip)

        self.run_isolated(batch, rows, score)
        ok = batch[col.ERROR_STAGE] == ""
        batch[col.PROBS_RAW] = object_column([p.astype(np.float32) for p in raw])
        batch[col.PROBS] = object_column([p.astype(np.float32) for p in debiased])
        batch[col.LABEL] = np.array(
            [self.labels[int(np.argmax(p))] if ok[i] else "" for i, p in enumerate(debiased)], dtype=object
        )
        batch[col.ANSWER] = np.array(answers, dtype=object)
        batch[col.LABELER_MODEL] = np.full(n, self.labeler.model_id, dtype=object)
        batch[col.ANSWER_LABEL] = np.array([parse_answer(a, self.labels) for a in answers], dtype=object)
        batch[col.KEYFRAME_TS] = object_column(
            [batch[col.FRAME_TS][i][batch[col.FRAME_GAP][i] == KEYFRAME] for i in range(n)]
        )
        for c in DROP:
            del batch[c]
        return batch


class _RowDebias:
    """The per-row debiasing methods (batch calibration needs the whole run: `emodist eval`)."""

    def __init__(self, cfg: Config, labeler):
        self.method = cfg.labeler.debias
        self.cfg, self.labeler = cfg, labeler
        L = len(cfg.label_names)
        prior = np.asarray(cfg.labeler.prior or [1.0 / L] * L, dtype=np.float64)
        if len(prior) != L:
            raise ValueError(f"labeler.prior has {len(prior)} values for {L} labels {list(cfg.label_names)}")
        self.prior = prior
        self._content_free: dict[tuple, np.ndarray] = {}

    def content_free(self, clip: ClipInput) -> np.ndarray:
        """The labeler's distribution for a content-free input of the clip's prompt shape
        (gray frames, empty descriptions), computed once per shape (Zhao et al. 2021)."""
        shape = (len(clip.keyframes), len(clip.descriptions), clip.keyframes.shape[1:])
        if shape not in self._content_free:
            gray = ClipInput(
                clip_id="content-free", keyframes=np.full_like(clip.keyframes, 128),
                keyframe_ts_s=clip.keyframe_ts_s, descriptions=[""] * len(clip.descriptions),
                gap_spans_s=clip.gap_spans_s,
                frames=None if clip.frames is None else np.full_like(clip.frames, 128),
                frame_ts_s=clip.frame_ts_s,
            )
            self._content_free[shape] = self.labeler.score([gray], self.cfg.label_names)[0].probs
        return self._content_free[shape]

    def __call__(self, probs: np.ndarray, clip: ClipInput) -> np.ndarray:
        from emodist import debias

        if self.method == "none":
            return probs
        if self.method == "contextual":
            return debias.contextual_calibration(probs[None], self.content_free(clip))[0]
        return debias.logit_adjustment(probs[None], self.prior, self.cfg.labeler.tau)[0]
