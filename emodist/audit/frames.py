"""Keyframe strips for the review page: the top clips decoded again, as small JPEGs.

Only the clips on the page are decoded, once each, up to their last keyframe; a clip that
no longer decodes gets no strip and its card says why.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

MAX_FRAMES = 8
HEIGHT_PX = 96
EPS_S = 1e-3


def strip_times(keyframe_ts: list[float], duration_s: float | None = None) -> list[float]:
    """The times to show: the row's keyframes (at most MAX_FRAMES, spread evenly), else
    four times across the clip."""
    ts = [float(t) for t in keyframe_ts or []]
    if not ts:
        d = duration_s or 2.0
        return [d * k / 4 for k in range(4)]
    if len(ts) > MAX_FRAMES:
        ts = [ts[int(i)] for i in np.linspace(0, len(ts) - 1, MAX_FRAMES).round()]
    return ts


def write_strip(uri: str, times: list[float], out_dir: Path, stem: str, cfg) -> tuple[list[str], str | None]:
    """JPEG files (names relative to out_dir's parent page) of the frames on screen at
    `times`, and None; or no files and why the clip could not be decoded."""
    import av
    from PIL import Image

    from emodist.io.open import open_clip

    out_dir.mkdir(parents=True, exist_ok=True)
    targets = sorted(times)
    picked: list[tuple[float, object]] = []
    try:
        with open_clip(uri, cfg) as handle, av.open(handle.for_pyav()) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            k, last = 0, None
            for frame in container.decode(stream):
                t = float(frame.time if frame.time is not None else 0.0)
                while k < len(targets) and t > targets[k] + EPS_S:
                    if last is not None:  # the frame before was on screen at this target
                        picked.append((targets[k], last))
                    k += 1
                if k >= len(targets):
                    break
                last = frame
            while k < len(targets) and last is not None:  # targets past the last frame
                picked.append((targets[k], last))
                k += 1
    except Exception as exc:  # noqa: BLE001 - a card without frames, never a failed page
        return [], f"{type(exc).__name__}: {exc}"
    names = []
    for i, (_, frame) in enumerate(picked):
        img = frame.to_image()
        w = max(1, round(img.width * HEIGHT_PX / img.height))
        name = f"{stem}_{i:02d}.jpg"
        img.resize((w, HEIGHT_PX), Image.BILINEAR).save(out_dir / name, quality=80)
        names.append(f"{out_dir.name}/{name}")
    return names, None if names else "no frame at the keyframe times"
