"""The GPU decoder (NVDEC, through torchcodec's CUDA decoder), with per-clip CPU fallback.

It decodes an opened clip (io/open.py): the container header is probed with PyAV first
(cheap, no decoding; the same probe and limits as the CPU decoder), and the codec and
pixel format are matched against what the GPU's NVDEC can decode. A clip it cannot
(10-bit or 4:2:2 H.264, AV1 on a chip without AV1 decode, an unusual codec) or any
GPU-side decoder error raises GpuUnsupported: the caller decodes that clip on the CPU
from the same handle, and the row says `cpu-fallback`, never a failure. torchcodec reads
the same handle (a path, the bytes already fetched, or the object's stream): nothing is
fetched twice. Frames are picked by the same plan, resized and fitted on the GPU, and
copied to the host once, at the model size.
"""
from __future__ import annotations

import logging

import numpy as np

from emodist.decoders.frames import decoded_row
from emodist.decoders.probe import probe_container
from emodist.io.open import ClipHandle
from emodist.plan import make_plan

log = logging.getLogger(__name__)

# Pixel formats NVDEC decodes, per codec (NVIDIA's Video Codec SDK support matrix,
# Turing..Hopper): H.264 only 8-bit 4:2:0; HEVC 4:2:0 and 4:4:4 up to 12 bit (4:2:2
# needs Blackwell); VP9 4:2:0 up to 12 bit; AV1 4:2:0 up to 10 bit where present.
NVDEC_PIX_FMTS: dict[str, frozenset[str]] = {
    "h264": frozenset({"yuv420p", "yuvj420p", "nv12"}),
    "hevc": frozenset({"yuv420p", "yuvj420p", "yuv420p10le", "yuv420p12le", "yuv444p", "yuv444p10le", "yuv444p12le"}),
    "vp9": frozenset({"yuv420p", "yuv420p10le", "yuv420p12le"}),
    "av1": frozenset({"yuv420p", "yuv420p10le"}),
    "vp8": frozenset({"yuv420p"}),
    "mpeg2video": frozenset({"yuv420p"}),
}
# Data-centre chips whose NVDEC has no AV1 decode.
NO_AV1 = ("H100", "H200", "H800", "A100", "A800", "V100", "T4", "P100")


class GpuUnsupported(Exception):
    """This clip cannot be decoded on this GPU; decode it on the CPU instead."""


def nvdec_refusal(codec: str, pix_fmt: str, gpu_name: str) -> str | None:
    """Why NVDEC on `gpu_name` cannot decode this stream, or None when it can."""
    fmts = NVDEC_PIX_FMTS.get(codec)
    if fmts is None:
        return f"codec {codec} has no NVDEC decoder"
    if codec == "av1" and any(chip in gpu_name for chip in NO_AV1):
        return f"the NVDEC of {gpu_name} has no AV1 decode"
    if pix_fmt not in fmts:
        return f"NVDEC cannot decode {codec} in {pix_fmt} (supported: {', '.join(sorted(fmts))})"
    return None


def fit_batch(frames, width: int, height: int, fit: str):
    """uint8 (N, 3, H, W) on the GPU -> uint8 (N, height, width, 3) on the host, with
    the aspect handled like the CPU path's `fit_frame` (pad, crop or stretch)."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = frames.shape
    if fit == "stretch":
        size = (height, width)
    else:
        scale = (min if fit == "pad" else max)(width / w, height / h)
        size = (max(2, round(h * scale)), max(2, round(w * scale)))
    x = F.interpolate(frames.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    x = x.round_().clamp_(0, 255).to(torch.uint8)
    if fit == "crop":
        y0, x0 = (size[0] - height) // 2, (size[1] - width) // 2
        x = x[:, :, y0 : y0 + height, x0 : x0 + width]
    elif fit == "pad":
        out = torch.zeros((n, 3, height, width), dtype=torch.uint8, device=x.device)
        y0, x0 = (height - size[0]) // 2, (width - size[1]) // 2
        out[:, :, y0 : y0 + size[0], x0 : x0 + size[1]] = x[:, :, :height, :width]
        x = out
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


class GpuDecoder:
    """One per decode actor; the actor holds a GPU share from Ray (decode.gpu_share)."""

    name = "cuda"

    def __init__(self, cfg):
        import torch
        from torchcodec.decoders import VideoDecoder  # noqa: F401 - fail here, not per clip

        if not torch.cuda.is_available():
            raise RuntimeError("decode.device=cuda but this actor sees no GPU; please report")
        self.cfg = cfg
        self.gpu_name = torch.cuda.get_device_name()

    def decode(self, handle: ClipHandle) -> dict:
        import av

        cfg = self.cfg
        try:
            container = av.open(handle.for_pyav(), mode="r")
        except av.error.FFmpegError as exc:
            raise GpuUnsupported(f"PyAV cannot open it ({exc})") from None  # the CPU path words the error
        try:
            if not container.streams.video:
                raise GpuUnsupported("no video stream")
            probe, _ = probe_container(container, cfg)
        finally:
            container.close()
        reason = nvdec_refusal(probe.codec, probe.pix_fmt, self.gpu_name)
        if reason:
            raise GpuUnsupported(reason)
        plan = make_plan(cfg.mode, cfg.plan, probe.duration_s, probe.fps)
        try:
            frames = self._frames(handle.for_torchcodec(), plan, probe.duration_s)
        except Exception as exc:  # noqa: BLE001 - any GPU-side failure: decode on CPU
            raise GpuUnsupported(f"GPU decoder failed: {type(exc).__name__}: {exc}") from exc
        return decoded_row(frames, plan, probe.duration_s, probe.fps, cfg, handle.uri)

    def _frames(self, source, plan, duration: float):
        from torchcodec.decoders import VideoDecoder

        cfg = self.cfg
        decoder = VideoDecoder(source, device="cuda", seek_mode="approximate")
        # A planned time at the very end may round past the last frame's start.
        last = decoder.metadata.end_stream_seconds or duration
        times = np.minimum(plan.ts_s, np.nextafter(last, 0)).tolist()
        batch = decoder.get_frames_played_at(seconds=times)
        return fit_batch(batch.data, cfg.decode.width, cfg.decode.height, cfg.decode.fit)
