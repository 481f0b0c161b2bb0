"""Where a clip shows no face: the decoded frames without one, as time spans and as the
words the describers and prompts use for them ("no face at 4.25-4.75 s").

Frames without a face are never described or labeled as an expression: the specialist's
classifier reads a background as some emotion all the same (issue 32).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def absent_spans(ts_s: Sequence[float], found: Sequence[bool]) -> list[list[float]]:
    """[first, last] frame time of each run of consecutive frames without a face, in time
    order (`ts_s` sorted, one `found` per frame)."""
    ts_s, found = np.asarray(ts_s, np.float64), np.asarray(found, bool)
    if len(ts_s) != len(found):
        raise ValueError(f"absent_spans: {len(ts_s)} times for {len(found)} face flags; please report")
    missing = np.flatnonzero(~found)
    if not len(missing):
        return []
    # A run breaks where the next missing frame is not the next frame.
    breaks = np.flatnonzero(np.diff(missing) > 1)
    starts = np.concatenate([missing[:1], missing[breaks + 1]])
    ends = np.concatenate([missing[breaks], missing[-1:]])
    return [[float(ts_s[a]), float(ts_s[b])] for a, b in zip(starts, ends)]


def span_text(spans: Sequence[Sequence[float]]) -> str:
    """'4.25-4.75 s, 6.00 s': spans as a reader sees them (a one-frame span is one time)."""
    return ", ".join(f"{a:.2f} s" if a == b else f"{a:.2f}-{b:.2f} s" for a, b in spans)


def absent_text(ts_s: Sequence[float], found: Sequence[bool]) -> str:
    """'no face at 4.25-4.75 s', or '' when every frame has a face."""
    spans = absent_spans(ts_s, found)
    return f"no face at {span_text(spans)}" if spans else ""


def joined(description: str, absent: str) -> str:
    """A gap's description of its face frames and the note on the frames without one."""
    return "; ".join(t for t in (description, absent) if t)
