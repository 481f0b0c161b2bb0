"""Decoders: a clip's planned frames at the model's size, whatever holds the clip.

    probe    one probe before decoding (size, codec, rate, duration, frames; the limits)
    frames   the decode columns every decoder returns; resizing; the shuffle diagnostic
    pyav     the CPU decoder (PyAV): video files, objects, tar members
    nvdec    the GPU decoder (NVDEC via torchcodec), with per-clip CPU fallback
    folders  clips stored as folders of images

`decode` picks one: a folder of images goes to `folders`; anything else is opened once
(io/open.py) and decoded on the GPU when one is configured and can, else on the CPU.
"""
from __future__ import annotations

import logging

from emodist import storage
from emodist.io.open import is_dir, open_clip
from emodist.io.suffixes import VIDEO_SUFFIXES, has_suffix

log = logging.getLogger(__name__)


def decode(uri: str, cfg, data: bytes | None = None, gpu=None) -> tuple[dict, str]:
    """(decode columns, device: cpu | cuda | cpu-fallback) of the clip at `uri` (or of
    `data`, a tar member's bytes)."""
    from emodist.decoders import folders, pyav

    if data is None and not has_suffix(uri, VIDEO_SUFFIXES) and is_dir(uri, cfg):
        return folders.decode_folder(uri, cfg), "cpu"
    with open_clip(uri, cfg, data) as handle:
        if gpu is not None:
            from emodist.decoders.nvdec import GpuUnsupported

            try:
                return gpu.decode(handle), "cuda"
            except GpuUnsupported as why:
                log.info("decode: %s: on CPU: %s", storage.scrub(uri), why)
                return pyav.decode_video(handle, cfg), "cpu-fallback"
        return pyav.decode_video(handle, cfg), "cpu"
