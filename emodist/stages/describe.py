"""Describe stage (MSCE stage 1, motion-to-text): one short text per gap, from the
gap's in-between frames. Keyframes pass on; in-between frames are dropped here unless
the labeler wants every frame, so they never travel further than they must."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

import numpy as np

from emodist import presence
from emodist import schema as col
from emodist.config import Config
from emodist.models.base import Describer, Gap
from emodist.plan import KEYFRAME
from emodist.stages.base import Batch, StepStage, object_column, set_torch_threads

REQUIRED = {col.CLIP_ID: "str", col.URI: "str", col.FRAMES: "uint8 (N,H,W,3)",
            col.FRAME_TS: "float64 (N,)", col.FRAME_GAP: "int32 (N,)"}


def gaps_of(clip_id: str, frames: np.ndarray, ts: np.ndarray, gap: np.ndarray,
            found: np.ndarray | None = None) -> list[Gap]:
    kf_ts = ts[gap == KEYFRAME]
    out = []
    for g in range(len(kf_ts) - 1):
        sel = gap == g
        out.append(Gap(clip_id, g, float(kf_ts[g]), float(kf_ts[g + 1]), frames[sel], ts[sel],
                       None if found is None else found[sel]))
    return out


def face_mask(batch: Batch, i: int) -> np.ndarray | None:
    """Clip i's per-frame face flags from the face stage; None when there was none, or
    for a clip flagged with no face at all (face.on_missing=flag: whole frames are read)."""
    if col.FACE_FOUND not in batch:
        return None
    found = np.asarray(batch[col.FACE_FOUND][i], bool)
    return found if len(found) == len(batch[col.FRAMES][i]) and found.any() else None


def face_fields(batch: Batch, i: int) -> tuple[list | None, list | None, list | None]:
    """The row's record of where the face was: per keyframe, per in-between frame of each
    gap, and the spans without one (None x 3 without the face stage)."""
    if col.FACE_FOUND not in batch:
        return None, None, None
    found, ts, gap = (np.asarray(batch[col.FACE_FOUND][i], bool), batch[col.FRAME_TS][i],
                      batch[col.FRAME_GAP][i])
    if len(found) != len(ts):  # a clip the face stage failed
        return None, None, None
    n_gaps = max(int((gap == KEYFRAME).sum()) - 1, 0)
    return (found[gap == KEYFRAME].tolist(), [found[gap == g].tolist() for g in range(n_gaps)],
            presence.absent_spans(ts, found))


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
                       batch[col.FRAME_GAP][i], face_mask(batch, i))
        out.spans[i] = [[g.start_s, g.end_s] for g in gaps]
        if self.describer is None:  # sparse or dense mode, or describer.backend=none
            return
        # A gap with no in-between frames (plan.inbetween_per_gap=0) has nothing to describe;
        # of the others only the frames with a face are described, the rest named as such.
        todo = [k for k, g in enumerate(gaps) if len(g.frames) and (g.face is None or g.face.any())]
        shown = [g if g.face is None else replace(g, frames=g.frames[g.face], ts_s=g.ts_s[g.face], face=None)
                 for g in (gaps[k] for k in todo)]
        texts = await self.describer.describe(shown) if shown else []
        if len(texts) != len(todo):
            raise RuntimeError(f"describer returned {len(texts)} texts for {len(todo)} gaps; please report")
        said = dict(zip(todo, texts))
        out.descriptions[i] = [presence.joined(said.get(k, ""), "" if g.face is None else
                                               presence.absent_text(g.ts_s, g.face))
                               for k, g in enumerate(gaps)]
        out.seconds[i] = loop.time() - t0

    def finish(self, batch: Batch, out: Described) -> Batch:
        n = len(batch[col.CLIP_ID])
        batch[col.DESCRIPTIONS] = object_column(out.descriptions)
        model_id = self.describer.model_id if self.describer is not None else ""
        batch[col.DESCRIBER_MODEL] = np.full(n, model_id, dtype=object)
        batch[col.GAP_SPANS] = object_column(out.spans)
        if col.FACE_FOUND in batch:  # else the committer writes nulls (no face stage)
            fields = [face_fields(batch, i) for i in range(n)]
            for j, c in enumerate((col.KEYFRAME_FACE, col.GAP_FACE, col.NO_FACE_SPANS)):
                batch[c] = object_column([f[j] for f in fields])
        if not self.keep_all_frames:
            keep = [batch[col.FRAME_GAP][i] == KEYFRAME for i in range(n)]
            if col.FACE_FOUND in batch:
                batch[col.FACE_FOUND] = object_column([
                    f[keep[i]] if len(f) == len(keep[i]) else f for i, f in enumerate(batch[col.FACE_FOUND])])
            for c in (col.FRAMES, col.FRAME_TS, col.FRAME_GAP):
                batch[c] = object_column([batch[c][i][keep[i]] for i in range(n)])
        return batch


class DescribeStage(StepStage):
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
