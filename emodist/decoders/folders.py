"""Clips stored as folders of images (DFEW's and FERV39k's face-cropped frames): sorted by
name, numbers in natural order, `input.frame_folder_fps` frames per second, decoded by
the same temporal plan as a video (the image on screen at each planned time), resized
the same way, and probed against the same limits."""
from __future__ import annotations

import io
import posixpath

import numpy as np

from emodist import storage
from emodist.decoders.frames import decoded_row, fit_frame
from emodist.decoders.probe import Probe
from emodist.decoders.pyav import EPS_S
from emodist.errors import ClipError
from emodist.io import limits
from emodist.io.suffixes import IMAGE_SUFFIXES, has_suffix, natural_key
from emodist.plan import FramePlan, make_plan


def _load_image(fs, path: str, size: int | None, cfg):
    """One frame image as an av.VideoFrame (RGB), checked against the input limits from
    its header before its pixels are decoded."""
    import av
    from PIL import Image

    name = posixpath.basename(path)
    if size is not None:
        limits.check_size(size, cfg, f"image {name}")
    data = fs.cat_file(path)
    try:
        with Image.open(io.BytesIO(data)) as im:
            limits.check_resolution(*im.size, cfg, subject=f"image {name}")
            rgb = np.asarray(im.convert("RGB"))
    except ClipError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for damaged files
        raise ClipError(
            f"unreadable image {name} ({type(exc).__name__}: {storage.scrub(str(exc))}); "
            "re-extract or remove the frame"
        ) from None
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")


def decode_folder(uri: str, cfg) -> dict:
    fs, path = storage.filesystem(uri, cfg)
    entries = [e for e in fs.ls(path, detail=True)
               if e.get("type") == "file" and has_suffix(e["name"], IMAGE_SUFFIXES)]
    if not entries:
        raise ClipError(
            f"no video and no frame images here; expected a video file or a folder of "
            f"{'/'.join(s.lstrip('.') for s in IMAGE_SUFFIXES)} frames"
        )
    entries.sort(key=lambda e: natural_key(posixpath.basename(e["name"].rstrip("/"))))
    n, fps = len(entries), float(cfg.input.frame_folder_fps)
    # Each image's resolution is checked as it is read (the folder has no header).
    probe = Probe(0, 0, fps, n / fps, n)
    probe.check(cfg, duration_detail=f" ({n} frames at input.frame_folder_fps = {fps:g})",
                frames_what="the folder holds")
    plan: FramePlan = make_plan(cfg.mode, cfg.plan, probe.duration_s, fps)
    # The image on screen at time t: frame k covers [k/fps, (k+1)/fps).
    picks = np.minimum(np.floor((plan.ts_s + EPS_S) * fps).astype(np.int64), n - 1)
    frames = np.empty((len(plan.ts_s), cfg.decode.height, cfg.decode.width, 3), np.uint8)
    last_k, last_img = -1, None
    for i, k in enumerate(picks):
        if k != last_k:  # an image picked twice is read and converted once
            e = entries[k]
            frame = _load_image(fs, e["name"], e.get("size"), cfg)
            last_k, last_img = k, fit_frame(frame, cfg.decode.width, cfg.decode.height, cfg.decode.fit)
        frames[i] = last_img
    return decoded_row(frames, plan, probe.duration_s, fps, cfg, uri)
