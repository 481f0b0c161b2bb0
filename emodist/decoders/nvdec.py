"""The GPU decoder (NVDEC, through torchcodec's CUDA decoder), with per-clip CPU fallback.

It decodes an opened clip (io/open.py): the container header is probed with PyAV first
(cheap, no decoding; the same probe and limits as the CPU decoder), and the codec and
pixel format are matched against what the GPU's NVDEC can decode. A clip it cannot
(10-bit or 4:2:2 H.264, AV1 on a chip without AV1 decode, an unusual codec) or any
GPU-side decoder error raises GpuUnsupported: the caller decodes that clip on the CPU
from the same handle, and the row says `cpu-fallback`, never a failure. So does a clip
torchcodec decoded on the CPU by itself (its `cpu_fallback`). A device error that
poisons the CUDA context is not the clip's: it is raised as fatal (errors.is_fatal) and
the actor restarts. At actor start a tiny clip is decoded on the GPU (`self_test`). torchcodec reads
the same handle (a path, the bytes already fetched, or the object's stream): nothing is
fetched twice. Frames are picked by the same plan, resized and fitted on the GPU, and
copied to the host once, at the model size.
"""
from __future__ import annotations

import logging

import numpy as np

from emodist.decoders.frames import decoded_row
from emodist.decoders.probe import probe_container
from emodist.errors import is_fatal
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


class GpuDecodeUnavailable(RuntimeError):
    """The decode actor cannot decode on its GPU at all: the start fails, in one line."""


def tiny_clip() -> bytes:
    """Two 64x64 frames of 8-bit 4:2:0 H.264 in MP4, made in memory: what every NVDEC
    decodes (its smallest H.264 picture is 48x16)."""
    import io

    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(2):
            img = np.full((64, 64, 3), 60 + 100 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


# What torchcodec's CPU fallback reason means for a whole node (CpuFallbackStatus's text).
NO_NVCUVID = ("the driver's video decode library (libnvcuvid) is not visible: the container lacks the "
              "driver's video capability (NVIDIA_DRIVER_CAPABILITIES=compute,utility,video)")


def self_test(video_decoder) -> None:
    """Decode a tiny clip on the GPU the way every clip will be; GpuDecodeUnavailable
    naming what is missing when it cannot, or when torchcodec quietly decodes on the CPU."""
    fix = "; or set decode.device=cpu"
    try:
        decoder = video_decoder(tiny_clip(), device="cuda", seek_mode="approximate")
        decoder.get_frames_played_at(seconds=[decoder.metadata.begin_stream_seconds or 0.0])
    except Exception as exc:  # noqa: BLE001 - sorted below
        if is_fatal(exc):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "libtorchcodec" in str(exc) or "FFmpeg" in str(exc):
            raise GpuDecodeUnavailable(
                "decode.device=cuda: torchcodec cannot load FFmpeg's shared libraries (libavcodec, libavformat, "
                "libavutil; FFmpeg 4 to 8): install them on the node (apt-get install ffmpeg; docker/Dockerfile "
                f"does){fix} [{first}]") from None
        raise GpuDecodeUnavailable(f"decode.device=cuda: torchcodec's CUDA decoder fails on a tiny H.264 clip "
                                   f"({type(exc).__name__}: {first}){fix}") from None
    fallback = decoder.cpu_fallback
    if fallback:
        why = NO_NVCUVID if "NVcuvid unavailable" in str(fallback) else f"torchcodec says: {fallback}"
        # Its frames land on the GPU either way (copied there): only this says where they were decoded.
        raise GpuDecodeUnavailable(f"decode.device=cuda: torchcodec decodes on the CPU, not on NVDEC ({why}){fix}")


def _torchcodec():
    """torchcodec's VideoDecoder, or GpuDecodeUnavailable saying how to get it."""
    try:
        from torchcodec.decoders import VideoDecoder
    except ImportError as exc:
        raise GpuDecodeUnavailable(f"decode.device=cuda but torchcodec does not import ({exc}); "
                                   "pip install 'emodist[gpu]', or set decode.device=cpu") from None
    return VideoDecoder


class GpuDecoder:
    """One per decode actor; the actor holds a GPU share from Ray (decode.gpu_share).

    Its start decodes a tiny clip on the GPU (`self_test`): an actor that cannot decode
    on NVDEC fails to start, saying what is missing, instead of labeling every row
    `cuda` while torchcodec decodes on the CPU. Per clip, torchcodec's own CPU fallback
    (`VideoDecoder.cpu_fallback`) makes the clip `cpu-fallback` with its reason; a CUDA
    error that poisons the context (errors.is_fatal) is raised as it is, so the actor
    exits and Ray restarts it, instead of moving the rest of the run to the CPU."""

    name = "cuda"

    def __init__(self, cfg, video_decoder=None):
        import torch

        from emodist.devices import require_cuda

        try:
            require_cuda("decode.device")
        except RuntimeError as exc:
            raise GpuDecodeUnavailable(str(exc)) from None
        self.cfg = cfg
        self.video_decoder = video_decoder or _torchcodec()
        self.gpu_name = torch.cuda.get_device_name()
        self_test(self.video_decoder)

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
        except GpuUnsupported:
            raise
        except Exception as exc:  # noqa: BLE001 - the device's errors are fatal, the clip's fall back
            if is_fatal(exc):
                raise
            raise GpuUnsupported(f"GPU decoder failed: {type(exc).__name__}: {exc}") from exc
        return decoded_row(frames, plan, probe.duration_s, probe.fps, cfg, handle.uri)

    def _frames(self, source, plan, duration: float):
        cfg = self.cfg
        decoder = self.video_decoder(source, device="cuda", seek_mode="approximate")
        # Planned times are from 0; a stream whose first frame starts later (an edit list,
        # a cut) has nothing before it, and one at the very end may round past the last
        # frame's start: both clamped into the stream, as the CPU path picks them.
        begin = decoder.metadata.begin_stream_seconds or 0.0
        last = decoder.metadata.end_stream_seconds or duration
        times = np.clip(plan.ts_s, begin, max(begin, np.nextafter(last, begin))).tolist()
        batch = decoder.get_frames_played_at(seconds=times)
        fallback = decoder.cpu_fallback
        if fallback:  # torchcodec decoded this stream on the CPU by itself: not a `cuda` row
            raise GpuUnsupported(f"torchcodec decoded it on the CPU ({fallback})")
        return fit_batch(batch.data, cfg.decode.width, cfg.decode.height, cfg.decode.fit)
