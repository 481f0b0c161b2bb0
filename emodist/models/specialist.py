"""Vision-only specialists behind the describer and labeler protocols (`models/base.py`).

Both run MTCNN face crops (`models/face.py`) through face-api's expression classifier
(`models/expression.py`), frame by frame:

- `TrajectoryDescriber` turns the per-frame expression trajectory of each gap into one
  short sentence (rules in `describe_trajectory`): the specialist's "motion-to-text".
- `AggregateLabeler` pools the per-frame probabilities of a whole clip into one
  distribution over the requested labels.

The classifier knows 7 classes: neutral, happy, sad, angry, fear, disgust, surprise.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from emodist import presence
from emodist.models.base import ClipInput, Gap, LabelResult
from emodist.models.expression import CLASSES, MODEL_ID, to_labels
from emodist.models.face import NoFaceError

NEUTRAL = CLASSES.index("neutral")


def describe_trajectory(ts_s: np.ndarray, probs: np.ndarray, *, min_change: float = 0.15,
                        classes: Sequence[str] = CLASSES) -> str:
    """One sentence for a (M, C) trajectory of class probabilities at times `ts_s`.

    Rules, applied in order (probabilities with 2 decimals, times in clip seconds):
    1. The *mover* is the non-neutral class whose probability spans the widest range
       (max - min) over the gap; among classes within 0.05 of that range a rising one
       (peak after trough) wins, then the classifier's class order.
    2. Range below `min_change`: "steady <top> (<mean>)", top = highest mean class,
       mean with 1 decimal: "steady neutral (0.9)".
    3. Peak after trough: "<mover> rises to <peak> at <t> s", plus ", replacing <c>"
       when a non-neutral class c was on top just before the mover took over; then, if
       it later drops by `min_change` from its peak, ", back to neutral by <t> s" when
       neutral is on top at that frame, ", then <top> by <t> s" for another class, or
       ", eases to <p> by <t> s" when the mover stays on top.
    4. Peak before trough: "<mover> falls from <peak> at <t> s to <low> by <t> s", plus
       ", leaving <top>" when another class is on top at the low.
    """
    ts_s, probs = np.asarray(ts_s, np.float64), np.asarray(probs, np.float64)
    if len(probs) == 0:
        return "no frames"
    others = [c for c in range(probs.shape[1]) if classes[c] != "neutral"]
    span = probs[:, others].max(axis=0) - probs[:, others].min(axis=0)
    rising = probs[:, others].argmax(axis=0) > probs[:, others].argmin(axis=0)
    near = span >= span.max() - 0.05
    mover = others[int(np.argmax(near & rising))] if (near & rising).any() else others[int(np.argmax(span))]
    if span.max() < min_change:
        top = int(np.argmax(probs.mean(axis=0)))
        return f"steady {classes[top]} ({probs[:, top].mean():.1f})"
    p = probs[:, mover]
    hi, lo = int(np.argmax(p)), int(np.argmin(p))
    name = classes[mover]
    if hi > lo:
        text = f"{name} rises to {p[hi]:.2f} at {ts_s[hi]:.2f} s"
        on_top = np.flatnonzero(probs.argmax(axis=1) == mover)
        before = int(np.argmax(probs[on_top[0] - 1])) if len(on_top) and on_top[0] > 0 else None
        if before is not None and classes[before] != "neutral":
            text += f", replacing {classes[before]}"
        after = np.flatnonzero(p[hi:] <= p[hi] - min_change)
        if len(after):
            j = hi + int(after[0])
            top = int(np.argmax(probs[j]))
            if top == mover:
                text += f", eases to {p[j]:.2f} by {ts_s[j]:.2f} s"
            elif classes[top] == "neutral":
                text += f", back to neutral by {ts_s[j]:.2f} s"
            else:
                text += f", then {classes[top]} by {ts_s[j]:.2f} s"
        return text
    text = f"{name} falls from {p[hi]:.2f} at {ts_s[hi]:.2f} s to {p[lo]:.2f} by {ts_s[lo]:.2f} s"
    top = int(np.argmax(probs[lo]))
    return text + (f", leaving {classes[top]}" if top != mover else "")


def aggregate(probs: np.ndarray, how: Literal["mean", "peak"] = "mean", power: float = 2.0) -> np.ndarray:
    """Pool (N, 7) per-frame probabilities into one (7,) distribution.

    "mean": the plain average. "peak": a weighted average with weight
    (1 - p_neutral)^power per frame, so the frames that show an expression count more
    than the neutral frames around them (a brief expression in a mostly neutral clip
    otherwise drowns in the "neutral sink"); a tiny floor keeps all-neutral clips
    defined (they stay neutral).
    """
    probs = np.asarray(probs, np.float64)
    if how == "mean":
        return probs.mean(axis=0)
    if how != "peak":
        raise ValueError(f"aggregate: unknown method {how!r}; use 'mean' or 'peak'")
    w = (1.0 - probs[:, NEUTRAL]) ** power + 1e-6
    return (w[:, None] * probs).sum(axis=0) / w.sum()


class _FaceExpression:
    """Shared part: optional face crop, then per-frame class probabilities (CLASSES order)."""

    def __init__(self, *, face_crop: bool, device: str, batch_size: int,
                 cache_dir: str | os.PathLike[str] | None, cropper: Any = None,
                 classifier: Any = None) -> None:
        from emodist.models.expression import ExpressionClassifier
        from emodist.models.face import FaceCropper

        self.face_crop = face_crop
        self.classifier = classifier or ExpressionClassifier(device, batch_size, cache_dir=cache_dir)
        self.cropper = (cropper or FaceCropper(cache_dir=cache_dir)) if face_crop else None

    def _inputs(self, frames: np.ndarray, face: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Crops to classify and which frames show a face: `face` when the caller knows
        (the face stage found them), the cropper's own finding, or None (whole frames)."""
        if self.cropper is None:
            return frames, face
        r = self.cropper.crop_clip(frames)
        return r.crops, r.found if face is None else face & r.found

    def _probs(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Classify several frame stacks in one batch; split the result back."""
        sizes = [len(x) for x in inputs]
        if sum(sizes) == 0:
            return [np.zeros((0, len(CLASSES))) for _ in inputs]
        shapes = {x.shape[1:3] for x in inputs if len(x)}
        if len(shapes) == 1:  # crops (or equal-sized frames): one batched call
            flat = self.classifier.predict(np.concatenate([x for x in inputs if len(x)]))
        else:  # whole frames of different sizes: one call per stack
            flat = np.concatenate([self.classifier.predict(x) for x in inputs])
        return np.split(flat, np.cumsum(sizes)[:-1])


class TrajectoryDescriber(_FaceExpression):
    """Describer: one sentence per gap about how the facial expression moves.

    face_crop: crop the face before classifying (recommended; whole frames are only
        right for datasets of face-cropped frames). Only the frames with a face (the
        gap's `face` flags, or the cropper's) are described; the others are named with
        their times: "happy rises to 0.81 at 3.25 s; no face at 3.75 s", or
        "no face at 4.25-5.00 s" for a gap without one.
    min_change: smallest probability change that counts as movement (describe_trajectory).
    """

    def __init__(self, *, face_crop: bool = True, device: str = "cpu", batch_size: int = 64,
                 min_change: float = 0.15, cache_dir: str | os.PathLike[str] | None = None,
                 cropper: Any = None, classifier: Any = None) -> None:
        super().__init__(face_crop=face_crop, device=device, batch_size=batch_size,
                         cache_dir=cache_dir, cropper=cropper, classifier=classifier)
        self.min_change = min_change
        self.model_id = f"{MODEL_ID}{'+mtcnn' if face_crop else ''}/trajectory"

    def trajectories(self, gaps: Sequence[Gap]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Per gap: (M, 7) probabilities in CLASSES order, and which frames show a face
        (None: not known, every frame counts)."""
        prepared = [self._inputs(g.frames, g.face) if len(g.frames) else (g.frames, g.face) for g in gaps]
        probs = self._probs([x for x, _ in prepared])
        return [(p, face) for p, (_, face) in zip(probs, prepared)]

    def describe(self, gaps: Sequence[Gap]) -> list[str]:
        out = []
        for g, (p, face) in zip(gaps, self.trajectories(gaps)):
            if face is None or face.all():
                out.append(describe_trajectory(g.ts_s, p, min_change=self.min_change))
                continue
            # The classifier reads a background as some emotion too: face frames only.
            moved = describe_trajectory(g.ts_s[face], p[face], min_change=self.min_change) if face.any() else ""
            out.append(presence.joined(moved, presence.absent_text(g.ts_s, face)))
        return out


class AggregateLabeler(_FaceExpression):
    """Labeler: per-frame expression probabilities over the whole clip, pooled.

    Uses every decoded frame (`ClipInput.frames`), else the keyframes, of those only the
    ones with a face (`frame_face` / `keyframe_face`, or the cropper's). aggregate: "mean"
    or "peak" (see `aggregate`). The classifier's 7 classes map onto the requested
    labels by name (synonyms allowed: "happiness" -> happy); labels it cannot express
    (MAFW's contempt, anxiety, helplessness, disappointment) always get probability 0
    and the rest is renormalised, so on MAFW this labeler can never predict those four.
    A label set sharing no class with the classifier is an error. A clip with no face
    in any frame raises `NoFaceError` (reason "no_face") when face_crop is on.
    """

    wants_all_frames = True

    def __init__(self, *, aggregate: Literal["mean", "peak"] = "mean", peak_power: float = 2.0,
                 face_crop: bool = True, device: str = "cpu", batch_size: int = 64,
                 cache_dir: str | os.PathLike[str] | None = None, cropper: Any = None,
                 classifier: Any = None) -> None:
        if aggregate not in ("mean", "peak"):
            raise ValueError(f"AggregateLabeler: aggregate={aggregate!r}; use 'mean' or 'peak'")
        super().__init__(face_crop=face_crop, device=device, batch_size=batch_size,
                         cache_dir=cache_dir, cropper=cropper, classifier=classifier)
        self.how, self.peak_power = aggregate, peak_power
        self.model_id = f"{MODEL_ID}{'+mtcnn' if face_crop else ''}/{aggregate}"

    def frame_probs(self, clips: Sequence[ClipInput]) -> list[np.ndarray]:
        """Per clip: (N, 7) per-frame probabilities in CLASSES order."""
        inputs = []
        for c in clips:
            dense = c.frames is not None and len(c.frames)
            frames, face = (c.frames, c.frame_face) if dense else (c.keyframes, c.keyframe_face)
            if frames is None or len(frames) == 0:
                raise ValueError(f"clip {c.clip_id}: no frames to label; the decode plan "
                                 "produced none (check the clip's duration)")
            crops, face = self._inputs(frames, None if face is None else np.asarray(face, bool))
            if face is not None and not face.any():
                raise NoFaceError(f"clip {c.clip_id}: no face found in any of {len(frames)} "
                                  "frames (no_face); check the clip shows a face, or label "
                                  "whole frames with face_crop=False")
            inputs.append(crops if face is None else crops[face])
        return self._probs(inputs)

    def score(self, clips: Sequence[ClipInput], labels: Sequence[str]) -> list[LabelResult]:
        out = []
        for probs in self.frame_probs(clips):
            pooled = aggregate(probs, self.how, self.peak_power)
            p = to_labels(pooled[None], tuple(labels))[0]
            top = int(np.argmax(p))
            out.append(LabelResult(p, answer=f"{labels[top]} ({p[top]:.2f}; {self.how} of "
                                             f"{len(probs)} frames)"))
        return out
