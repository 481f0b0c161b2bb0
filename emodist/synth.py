"""Synthetic emotion clips: cartoon faces with brief expression events, for tests and
benchmarks that need realistic-looking video without downloading a dataset.

A clip of label L is mostly neutral, with 1-3 short (0.25-0.5 s) events of L, so a
sampler that looks once per second can miss them, as with real micro-expressions.
Labels follow DFEW's long tail, so a labeler's head-class bias shows up here too.
"""
from __future__ import annotations

import csv
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

from emodist.labels import DFEW, canonical

# Approximate DFEW single-label class proportions (normalised at draw time).
CLASS_WEIGHTS: dict[str, float] = {
    "happy": 0.24, "sad": 0.17, "neutral": 0.23, "angry": 0.19,
    "surprise": 0.11, "disgust": 0.015, "fear": 0.055,
}
UNKNOWN_WEIGHT = 0.02  # labels outside DFEW (MAFW's extra four, custom sets) are rare

# Expression parameters: mouth curve (+ smile), mouth open, mouth width, brow raise,
# brow angle (+ inner ends up), eye openness, asymmetry (one corner up), nose wrinkle.
PARAMS = ("curve", "open", "width", "brow", "angle", "eye", "asym", "nose")
NEUTRAL = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0], dtype=np.float32)
TARGETS: dict[str, tuple[float, ...]] = {
    "neutral": tuple(NEUTRAL),
    "happy": (1.0, 0.35, 1.25, 0.15, 0.0, 0.7, 0.0, 0.0),
    "sad": (-0.9, 0.0, 0.9, 0.2, 1.0, 0.65, 0.0, 0.0),
    "angry": (-0.3, 0.0, 0.7, -0.7, -1.0, 0.8, 0.0, 0.2),
    "surprise": (0.0, 1.0, 0.8, 1.0, 0.0, 1.6, 0.0, 0.0),
    "disgust": (-0.5, 0.2, 0.9, -0.4, -0.5, 0.55, 0.7, 1.0),
    "fear": (-0.3, 0.55, 1.35, 0.8, 0.8, 1.6, 0.0, 0.0),
    "contempt": (0.1, 0.0, 1.0, 0.0, -0.2, 0.85, 1.0, 0.0),
    "anxiety": (-0.35, 0.15, 0.85, 0.45, 0.6, 1.25, 0.0, 0.0),
    "helplessness": (-0.5, 0.25, 1.0, 0.5, 1.0, 0.6, 0.0, 0.0),
    "disappointment": (-0.7, 0.0, 1.05, -0.15, 0.35, 0.6, 0.0, 0.0),
}
EVENT_S = (0.25, 0.5)


@dataclass(frozen=True)
class ClipPlan:
    """Everything needed to render one clip; deterministic for (seed, index)."""
    uri: str
    label: str
    duration_s: float  # n_frames / fps (the drawn duration rounded to whole frames)
    n_frames: int
    events: tuple[tuple[float, float], ...]  # (start_s, end_s) of each expression event
    seed: tuple[int, int]


def class_weights(labels: Sequence[str]) -> np.ndarray:
    w = np.array([CLASS_WEIGHTS.get(canonical(name), UNKNOWN_WEIGHT) for name in labels], dtype=np.float64)
    return w / w.sum()


def draw_labels(n: int, labels: Sequence[str], rng: np.random.Generator) -> list[str]:
    """n labels drawn with DFEW-like long-tail weights."""
    idx = rng.choice(len(labels), size=n, p=class_weights(labels))
    return [labels[i] for i in idx]


def target(label: str) -> np.ndarray:
    """Expression target of a label; unknown labels get a stable made-up expression."""
    known = TARGETS.get(canonical(label))
    if known is not None:
        return np.array(known, dtype=np.float32)
    r = np.random.default_rng(zlib.crc32(canonical(label).encode()))
    return NEUTRAL + r.uniform(-0.8, 0.8, len(PARAMS)).astype(np.float32)


def _events(dur: float, rng: np.random.Generator) -> tuple[tuple[float, float], ...]:
    lengths = list(rng.uniform(*EVENT_S, size=int(rng.integers(1, 4))))
    # Keep 0.25 s between events and 0.05 s at the edges; drop events that don't fit.
    while len(lengths) > 1 and sum(lengths) + 0.25 * (len(lengths) - 1) + 0.1 > dur:
        lengths.pop()
    if sum(lengths) + 0.1 > dur:  # very short clip: one centred event, as long as fits
        length = max(min(lengths[0], dur - 0.1), dur / 2)
        return ((round(float(dur - length) / 2, 4), round(float(dur + length) / 2, 4)),)
    free = dur - sum(lengths) - 0.25 * (len(lengths) - 1) - 0.1
    gaps = rng.random(len(lengths) + 1)
    gaps = gaps / gaps.sum() * free
    out, t = [], 0.05 + gaps[0]
    for i, length in enumerate(lengths):
        out.append((round(float(t), 4), round(float(t + length), 4)))
        t += length + 0.25 + gaps[i + 1]
    return tuple(out)


def plan_clips(n_clips: int, *, seed: int = 0, labels: Sequence[str] = DFEW, fps: int = 25,
               min_s: float = 2.0, max_s: float = 6.0) -> list[ClipPlan]:
    """The labels, durations and events of each clip, without rendering anything."""
    _check(n_clips, 64, fps, min_s, max_s)
    if not labels:
        raise ValueError("labels must not be empty")
    names = draw_labels(n_clips, labels, np.random.default_rng(seed))
    plans = []
    for i, label in enumerate(names):
        rng = np.random.default_rng([seed, i])  # per clip, so clip i is stable in n_clips
        n_frames = max(1, round(rng.uniform(min_s, max_s) * fps))
        dur = n_frames / fps
        events = () if canonical(label) == "neutral" else _events(dur, rng)
        plans.append(ClipPlan(f"clip_{i:05d}.mp4", label, dur, n_frames, events, (seed, i)))
    return plans


def _check(n_clips: int, size: int, fps: int, min_s: float, max_s: float) -> None:
    if n_clips < 1:
        raise ValueError(f"n_clips must be >= 1, got {n_clips}")
    if size < 64 or size % 2:
        raise ValueError(f"size must be even and >= 64 (yuv420p needs even sizes), got {size}")
    if not 0 < min_s <= max_s:
        raise ValueError(f"need 0 < min_s <= max_s, got min_s={min_s}, max_s={max_s}")
    if fps <= 0 or int(fps) != fps:
        raise ValueError(f"fps must be a positive whole number, got {fps}")


def intensity(t: np.ndarray, events: Sequence[tuple[float, float]]) -> np.ndarray:
    """0..1 per time: trapezoid per event (ramp up 25%, hold 50%, ramp down 25%)."""
    out = np.zeros_like(t, dtype=np.float32)
    for a, b in events:
        ramp = 0.25 * (b - a)
        out = np.maximum(out, np.clip(np.minimum(t - a, b - t) / ramp, 0.0, 1.0))
    return out


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    # Smooth colour blobs (upsampled coarse noise) plus fine static texture.
    coarse = rng.uniform(40, 200, (6, 6, 3)).astype(np.uint8)
    bg = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), dtype=np.float32)
    bg += rng.normal(0, 12, (size, size, 1)).astype(np.float32)
    return np.clip(bg, 0, 255).astype(np.uint8)


def _draw_face(img: Image.Image, cx: float, cy: float, r: float, p: np.ndarray,
               skin: tuple[int, int, int], hair: tuple[int, int, int]) -> None:
    curve, opn, width, brow, angle, eye, asym, nose = (float(v) for v in p)
    rx, ry = 0.8 * r, r
    d = ImageDraw.Draw(img)
    d.ellipse([cx - rx * 1.05, cy - ry * 1.08, cx + rx * 1.05, cy + ry * 0.4], fill=hair)
    d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=skin)
    dark = (35, 25, 20)
    # Brows and lips are drawn relative to the skin so they stay visible on dark skin.
    brows = tuple(min(h, int(0.4 * c)) for h, c in zip(hair, skin))
    lips = (min(255, int(0.6 * skin[0]) + 70), int(0.45 * skin[1]), int(0.5 * skin[2]))
    for s in (-1, 1):  # left and right eye + brow
        ex, ey = cx + s * 0.4 * rx, cy - 0.15 * ry
        ew, eh = 0.2 * rx, max(0.09 * ry * eye, 1.0)
        d.ellipse([ex - ew, ey - eh, ex + ew, ey + eh], fill=(245, 245, 240), outline=dark)
        pr = min(0.08 * rx, eh)
        d.ellipse([ex - pr, ey - pr, ex + pr, ey + pr], fill=dark)
        by = cy - 0.36 * ry - brow * 0.14 * ry
        inner = (cx + s * 0.15 * rx, by - angle * 0.13 * ry + 0.03 * ry)
        outer = (cx + s * 0.62 * rx, by + angle * 0.06 * ry)
        d.line([inner, outer], fill=brows, width=max(2, int(0.05 * r)))
    # Nose; a wrinkle (disgust) adds lines at the bridge and lifts the upper lip.
    d.line([(cx, cy - 0.05 * ry), (cx - 0.08 * rx, cy + 0.22 * ry), (cx + 0.04 * rx, cy + 0.25 * ry)],
           fill=(150, 90, 70), width=2)
    for k in range(int(round(3 * max(nose, 0)))):
        y = cy - 0.02 * ry + k * 0.05 * ry
        d.line([(cx - 0.12 * rx, y), (cx + 0.12 * rx, y + 0.01 * ry)], fill=(140, 80, 60), width=1)
    my = cy + 0.52 * ry - 0.08 * ry * nose
    w = 0.33 * rx * width
    xs = np.linspace(-1.0, 1.0, 15)
    upper = my - 0.2 * ry * curve * (xs ** 2 - 0.3) - 0.14 * ry * asym * np.maximum(xs, 0) ** 2
    lower = upper + 0.3 * ry * opn * (1 - xs ** 2)
    top = list(zip(cx + w * xs, upper))
    if opn > 0.02:
        d.polygon(top + list(zip(cx + w * xs[::-1], lower[::-1])), fill=(55, 10, 20))
    d.line(top, fill=lips, width=max(2, int(0.04 * r)))


def render_clip(plan: ClipPlan, size: int = 224, fps: int = 25) -> Iterator[np.ndarray]:
    """Yield the clip's RGB frames (uint8, size x size x 3)."""
    rng = np.random.default_rng([*plan.seed, 1])
    bg = _background(size, rng)
    # Skin tone: a point between a dark and a light tone, so it stays skin-coloured.
    tone = rng.uniform() * np.array([125.0, 125.0, 115.0]) + [115, 75, 55] + rng.uniform(-8, 8, 3)
    skin = tuple(int(v) for v in np.clip(tone, 0, 255))
    hair = tuple(int(v) for v in rng.uniform(0.2, 1.0) * np.array([110, 80, 55]))
    goal = target(plan.label)
    t = np.arange(plan.n_frames) / fps
    amp = intensity(t, plan.events)
    # Head drifts slowly (a few px over seconds) and sways a little (~1.5 Hz); smooth,
    # not white, so neutral frames next to each other stay alike, as in real footage.
    phase = rng.uniform(0, 2 * np.pi, 4)
    period = np.concatenate([rng.uniform(5.0, 10.0, 2), rng.uniform(0.5, 0.9, 2)])
    wave = np.sin(2 * np.pi * t[:, None] / period + phase) * [0.007 * size, 0.005 * size, 0.25, 0.25]
    dx, dy = wave[:, 0] + wave[:, 2], wave[:, 1] + wave[:, 3]
    wobble = 0.03 * np.sin(2 * np.pi * t / 2.3 + phase[0])  # tiny neutral fluctuation
    cx0, cy0 = size / 2 + rng.uniform(-0.04, 0.04, 2) * size
    r = size * rng.uniform(0.3, 0.34)
    bg_img = Image.fromarray(bg)
    # Sensor noise: fresh noise per frame is costly to draw, so each frame reads a window
    # at a random offset of one noise bank per clip (different per frame, cheap).
    n_px = size * size * 3
    bank = np.rint(rng.normal(0, 5, 2 * n_px)).astype(np.int16)
    offsets = rng.integers(0, n_px, plan.n_frames)
    for j in range(plan.n_frames):
        p = NEUTRAL + amp[j] * (goal - NEUTRAL)
        p[0] += wobble[j]
        img = bg_img.copy()
        _draw_face(img, cx0 + dx[j], cy0 + dy[j], r, p, skin, hair)
        noisy = np.asarray(img, dtype=np.int16) + bank[offsets[j]:offsets[j] + n_px].reshape(size, size, 3)
        yield np.clip(noisy, 0, 255).astype(np.uint8)


def _encode(path: Path, frames: Iterable[np.ndarray], size: int, fps: int) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23"})
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        for j, arr in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts, frame.time_base = j, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def synthesize(out_dir: str | Path, n_clips: int, *, seed: int = 0, labels: Sequence[str] = DFEW,
               size: int = 224, fps: int = 25, min_s: float = 2.0, max_s: float = 6.0) -> Path:
    """Write n_clips mp4 clips, manifest.csv (uri,label) and events.csv into out_dir;
    returns the manifest's path."""
    _check(n_clips, size, fps, min_s, max_s)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plans = plan_clips(n_clips, seed=seed, labels=labels, fps=fps, min_s=min_s, max_s=max_s)
    for plan in plans:
        _encode(out / plan.uri, render_clip(plan, size, fps), size, fps)
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["uri", "label"])
        w.writerows([p.uri, p.label] for p in plans)
    with open(out / "events.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["uri", "label", "event_start_s", "event_end_s"])
        w.writerows([p.uri, p.label, a, b] for p in plans for a, b in p.events)
    return manifest
