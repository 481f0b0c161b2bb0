"""Label stage (MSCE stage 2): a distribution over the label set per clip, its argmax,
and the debiased distribution next to the raw one. Frames end here: the rows that
leave this stage are small enough for the writer."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from emodist import schema as col
from emodist.config import Config
from emodist.models.base import ClipInput, Labeler
from emodist.models.scoring import parse_answer
from emodist.plan import KEYFRAME
from emodist.stages.base import Batch, StepStage, object_column, set_torch_threads
from emodist.stages.describe import REQUIRED, face_mask

DROP = (col.FRAMES, col.FRAME_TS, col.FRAME_GAP, col.FACE_FOUND)


@dataclass
class Labeled:
    """One batch's label outputs, filled clip by clip."""

    raw: list[np.ndarray]
    debiased: list[np.ndarray]
    answers: list[str]
    seconds: list[float]


class Labeling:
    """The label step on one batch (LabelStage alone, or after describing, per clip)."""

    def __init__(self, cfg: Config, labeler: Labeler):
        self.cfg, self.labeler = cfg, labeler
        self.labels = cfg.label_names
        self.debias = _RowDebias(cfg, labeler)

    def start(self, batch: Batch) -> Labeled:
        n, L = len(batch[col.CLIP_ID]), len(self.labels)
        return Labeled([np.zeros(L)] * n, [np.zeros(L)] * n, [""] * n, [0.0] * n)

    def clip_input(self, batch: Batch, i: int, descriptions=None, spans=None) -> ClipInput:
        frames, ts, gap = batch[col.FRAMES][i], batch[col.FRAME_TS][i], batch[col.FRAME_GAP][i]
        kf = gap == KEYFRAME
        all_frames = self.labeler.wants_all_frames
        found = face_mask(batch, i)
        return ClipInput(
            clip_id=str(batch[col.CLIP_ID][i]), keyframes=frames[kf], keyframe_ts_s=ts[kf],
            descriptions=list(batch[col.DESCRIPTIONS][i] if descriptions is None else descriptions),
            gap_spans_s=[tuple(s) for s in (batch[col.GAP_SPANS][i] if spans is None else spans)],
            frames=frames if all_frames else None, frame_ts_s=ts if all_frames else None,
            keyframe_face=None if found is None else found[kf],
            frame_face=found if all_frames else None,
        )

    async def clip(self, batch: Batch, i: int, out: Labeled, descriptions=None, spans=None) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        clip = self.clip_input(batch, i, descriptions, spans)
        (result,) = await self.labeler.score([clip], self.labels)
        out.raw[i], out.answers[i] = result.probs, result.answer
        out.debiased[i] = await self.debias(result.probs, clip)
        out.seconds[i] = loop.time() - t0

    def finish(self, batch: Batch, out: Labeled) -> Batch:
        n = len(batch[col.CLIP_ID])
        ok = batch[col.ERROR_STAGE] == ""
        batch[col.PROBS_RAW] = object_column([p.astype(np.float32) for p in out.raw])
        batch[col.PROBS] = object_column([p.astype(np.float32) for p in out.debiased])
        batch[col.LABEL] = np.array(
            [self.labels[int(np.argmax(p))] if ok[i] else "" for i, p in enumerate(out.debiased)], dtype=object
        )
        batch[col.ANSWER] = np.array(out.answers, dtype=object)
        batch[col.LABELER_MODEL] = np.full(n, self.labeler.model_id, dtype=object)
        batch[col.ANSWER_LABEL] = np.array([parse_answer(a, self.labels) for a in out.answers], dtype=object)
        batch[col.KEYFRAME_TS] = object_column(
            [batch[col.FRAME_TS][i][batch[col.FRAME_GAP][i] == KEYFRAME] for i in range(n)]
        )
        for c in DROP:
            batch.pop(c, None)
        return batch


class LabelStage(StepStage):
    """The label step in a pool of its own (after a separate describe pool)."""

    name = "label"
    required = REQUIRED | {col.DESCRIPTIONS: "list[str]", col.GAP_SPANS: "list[[start, end]]"}

    def __init__(self, cfg: Config, labeler: Labeler | None = None):
        from emodist.models.registry import build_models

        if labeler is None:
            set_torch_threads(cfg.labeler.num_cpus)
            _, labeler = build_models(cfg, roles=("labeler",))
        self.step = Labeling(cfg, labeler)
        self.labeler = labeler


class _RowDebias:
    """The per-row debiasing methods (batch calibration needs the whole run: `emodist eval`)."""

    def __init__(self, cfg: Config, labeler: Labeler):
        self.method = cfg.labeler.debias
        self.cfg, self.labeler = cfg, labeler
        L = len(cfg.label_names)
        from emodist import debias

        # A class without training support is floored as `emodist eval` floors it (a 0
        # would make log(prior) -inf); length and signs are checked in config.
        self.prior = debias.smooth_prior(cfg.labeler.prior) if cfg.labeler.prior else np.full(L, 1.0 / L)
        self._content_free: dict[tuple, asyncio.Future] = {}

    async def content_free(self, clip: ClipInput) -> np.ndarray:
        """The labeler's distribution for a content-free input of the clip's prompt shape
        (gray frames, empty descriptions), computed once per shape (Zhao et al. 2021)."""
        faces = None if clip.keyframe_face is None else tuple(bool(f) for f in clip.keyframe_face)
        shape = (len(clip.keyframes), len(clip.descriptions), clip.keyframes.shape[1:], faces)
        if shape not in self._content_free:
            gray = ClipInput(
                clip_id="content-free", keyframes=np.full_like(clip.keyframes, 128),
                keyframe_ts_s=clip.keyframe_ts_s, descriptions=[""] * len(clip.descriptions),
                gap_spans_s=clip.gap_spans_s,
                frames=None if clip.frames is None else np.full_like(clip.frames, 128),
                frame_ts_s=clip.frame_ts_s, keyframe_face=clip.keyframe_face, frame_face=clip.frame_face,
            )
            # One computation per shape, however many clips of that shape wait for it.
            self._content_free[shape] = asyncio.ensure_future(self.labeler.score([gray], self.cfg.label_names))
        try:
            return (await asyncio.shield(self._content_free[shape]))[0].probs
        except Exception:
            self._content_free.pop(shape, None)  # the next clip tries again
            raise

    async def __call__(self, probs: np.ndarray, clip: ClipInput) -> np.ndarray:
        from emodist import debias

        if self.method == "none":
            return probs
        if self.method == "contextual":
            return debias.contextual_calibration(probs[None], await self.content_free(clip))[0]
        return debias.logit_adjustment(probs[None], self.prior, self.cfg.labeler.tau)[0]
