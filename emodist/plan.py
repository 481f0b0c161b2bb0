"""Temporal plans: which frames to decode, by time, before any decoding happens.

msce/text: keyframes every `keyframe_interval_s`; in each gap between two keyframes,
`inbetween_per_gap` frames at `inbetween_step_s` steps after the first keyframe (the
paper: 1 s keyframes, 4 in-between frames at 0.25 s, so a 0.25-0.5 s micro-expression
always lands on some frame). sparse: keyframes only, at `sparse_fps`. dense: every
frame, evenly thinned to `dense_max_frames`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emodist.config import Mode, PlanConfig

KEYFRAME = -1


@dataclass(frozen=True, slots=True)
class FramePlan:
    ts_s: np.ndarray  # float64 (N,), target times, sorted
    gap: np.ndarray  # int32 (N,): KEYFRAME, or the gap index of an in-between frame

    @property
    def keyframe_ts_s(self) -> np.ndarray:
        return self.ts_s[self.gap == KEYFRAME]

    @property
    def n_gaps(self) -> int:
        return int(self.gap.max()) + 1 if len(self.gap) and self.gap.max() >= 0 else 0

    def gap_spans_s(self) -> list[tuple[float, float]]:
        """[start, end] of each gap: the times of the keyframes around it."""
        kf = self.keyframe_ts_s
        return [(float(kf[g]), float(kf[g + 1])) for g in range(self.n_gaps)]


def _keyframe_times(duration_s: float, interval_s: float, max_keyframes: int) -> tuple[np.ndarray, float]:
    count = int(np.floor(max(duration_s - 1e-6, 0.0) / interval_s)) + 1
    if count > max_keyframes:
        # Stretch the interval so the whole clip is still covered by max_keyframes.
        interval_s = duration_s / max_keyframes
        count = max_keyframes
    return np.arange(count, dtype=np.float64) * interval_s, interval_s


def make_plan(mode: Mode, cfg: PlanConfig, duration_s: float, native_fps: float) -> FramePlan:
    if not duration_s > 0:
        raise ValueError(f"clip duration must be positive, got {duration_s!r} s")
    if mode == "sparse":
        ts, _ = _keyframe_times(duration_s, 1.0 / cfg.sparse_fps, cfg.max_keyframes)
        return FramePlan(ts, np.full(len(ts), KEYFRAME, dtype=np.int32))
    if mode == "dense":
        n_frames = max(1, int(round(duration_s * native_fps)))
        idx = np.unique(np.linspace(0, n_frames - 1, min(n_frames, cfg.dense_max_frames)).round())
        ts = idx / native_fps
        return FramePlan(ts.astype(np.float64), np.full(len(ts), KEYFRAME, dtype=np.int32))
    # msce and text share the plan; they differ in what the labeler is shown.
    kf, interval_s = _keyframe_times(duration_s, cfg.keyframe_interval_s, cfg.max_keyframes)
    step_s = cfg.inbetween_step_s * interval_s / cfg.keyframe_interval_s
    times, gaps = [kf], [np.full(len(kf), KEYFRAME, dtype=np.int32)]
    for g in range(len(kf) - 1):
        inb = kf[g] + step_s * np.arange(1, cfg.inbetween_per_gap + 1)
        inb = inb[inb <= kf[g + 1] + 1e-9]
        times.append(inb)
        gaps.append(np.full(len(inb), g, dtype=np.int32))
    ts, gap = np.concatenate(times), np.concatenate(gaps)
    order = np.lexsort((gap, ts))  # by time; a keyframe before an in-between frame at the same time
    return FramePlan(ts[order], gap[order])
