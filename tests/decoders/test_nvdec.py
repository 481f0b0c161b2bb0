"""GPU decoding's CPU-side logic: the NVDEC capability check, the resource request,
the clear error without a GPU, and the per-clip CPU fallback recorded in the row.
(tests/gpu/test_gpu_decode.py compares real GPU frames with CPU frames.)"""

import av
import numpy as np
import pytest

from emodist import schema as col
from emodist.config import load_config
from emodist.decoders.frames import fit_frame
from emodist.decoders.nvdec import GpuDecodeUnavailable, GpuDecoder, GpuUnsupported, fit_batch, nvdec_refusal
from emodist.decoders.pyav import decode_clip, decode_video
from emodist.stages.decode import DecodeStage
from tests.conftest import stage_rows


@pytest.mark.parametrize("codec, pix_fmt, gpu, refused", [
    ("h264", "yuv420p", "NVIDIA H100 80GB HBM3", None),
    ("h264", "yuv420p10le", "NVIDIA H100 80GB HBM3", "cannot decode h264 in yuv420p10le"),
    ("h264", "yuv422p", "NVIDIA L40S", "cannot decode h264 in yuv422p"),
    ("hevc", "yuv420p10le", "NVIDIA H100 80GB HBM3", None),
    ("av1", "yuv420p", "NVIDIA H100 80GB HBM3", "has no AV1 decode"),
    ("av1", "yuv420p", "NVIDIA L40S", None),
    ("prores", "yuv422p10le", "NVIDIA L40S", "has no NVDEC decoder"),
])
def test_nvdec_capabilities(codec, pix_fmt, gpu, refused):
    reason = nvdec_refusal(codec, pix_fmt, gpu)
    assert (reason is None) if refused is None else (refused in reason)


class FakeGpu:
    """Stands in for the CUDA decoder: refuses clips named in `refuse`."""

    def __init__(self, cfg, refuse):
        self.cfg, self.refuse, self.calls = cfg, refuse, 0

    def decode(self, handle):
        self.calls += 1
        if any(r in handle.uri for r in self.refuse):
            raise GpuUnsupported("NVDEC cannot decode h264 in yuv422p")
        return decode_video(handle, self.cfg)


def test_a_clip_the_gpu_cannot_decode_falls_back_to_cpu_and_the_row_says_so(clips_dir, bad_files):
    cfg = load_config(None, ["mode=sparse"])
    stage = DecodeStage(cfg)
    stage.gpu = FakeGpu(cfg, refuse=["clip_00001"])
    uris = [str(clips_dir / "clip_00000.mp4"), str(clips_dir / "clip_00001.mp4"), str(bad_files["zero"])]
    out = stage({col.CLIP_ID: np.array(["a", "b", "c"], dtype=object), col.URI: np.array(uris, dtype=object)})
    assert list(out[col.DECODE_DEVICE][:2]) == ["cuda", "cpu-fallback"]
    assert out[col.ERROR_STAGE][1] == "" and len(out[col.FRAMES][1]) > 0  # never a failure
    assert stage_rows(out)["c"][col.ERROR_STAGE] == "decode"  # a bad file is still a failure
    np.testing.assert_array_equal(out[col.FRAMES][1], decode_clip(uris[1], cfg)[col.FRAMES])


@pytest.mark.parametrize("fit", ["pad", "crop", "stretch"])
def test_gpu_resize_matches_the_cpu_path_within_tolerance(clips_dir, fit):
    """fit_batch is the GPU path's resize; on CPU tensors it must agree with FFmpeg's."""
    import torch

    with av.open(str(clips_dir / "clip_00002.mp4")) as c:
        frames = [f for _, f in zip(range(5), c.decode(video=0))]
    full = np.stack([f.to_ndarray(format="rgb24") for f in frames])  # 224x224
    gpu_like = fit_batch(torch.from_numpy(full).permute(0, 3, 1, 2), 160, 96, fit)
    cpu = np.stack([fit_frame(f, 160, 96, fit) for f in frames])
    assert gpu_like.shape == cpu.shape == (5, 96, 160, 3)
    diff = np.abs(gpu_like.astype(int) - cpu.astype(int))
    assert diff.mean() < 4.0, diff.mean()


class CountingFS:
    """An fsspec in-memory filesystem that counts how often objects are opened or fetched."""

    @staticmethod
    def register():
        import fsspec
        from fsspec.implementations.memory import MemoryFileSystem

        class Counting(MemoryFileSystem):
            protocol = ("countmem",)
            opens = 0
            fetches = 0

            @classmethod
            def _strip_protocol(cls, path):
                return "/" + path.removeprefix("countmem://").lstrip("/")

            def _open(self, path, mode="rb", **kw):
                type(self).opens += "r" in mode
                return super()._open(path, mode, **kw)

            def cat_file(self, path, *a, **kw):
                type(self).fetches += 1
                return super().cat_file(path, *a, **kw)

        fsspec.register_implementation("countmem", Counting, clobber=True)
        return Counting


@pytest.mark.parametrize("whole_read", [True, False])
def test_the_gpu_path_opens_each_object_once(clips_dir, monkeypatch, whole_read):
    """The probe (PyAV) and the GPU decoder (torchcodec, stood in for here) read the same
    handle: one open per object, no second fetch, whether the object is read whole or
    streamed (large objects)."""
    from emodist import decoders
    from emodist.io import open as io_open

    fs_cls = CountingFS.register()
    data = (clips_dir / "clip_00001.mp4").read_bytes()
    fs_cls().pipe_file("/clips/a.mp4", data)
    if not whole_read:
        monkeypatch.setattr(io_open, "WHOLE_READ_BYTES", 1024)  # the object is streamed
    cfg = load_config(None, ["mode=sparse"])
    gpu = GpuDecoder.__new__(GpuDecoder)
    gpu.cfg, gpu.gpu_name = cfg, "NVIDIA H100 80GB HBM3"
    given = []

    def frames_from(source, plan, duration):  # torchcodec's part: read what it is given
        given.append(type(source).__name__)
        payload = source if isinstance(source, bytes) else source.read()
        assert payload == data
        return np.zeros((len(plan.ts_s), cfg.decode.height, cfg.decode.width, 3), np.uint8)

    monkeypatch.setattr(gpu, "_frames", frames_from)
    fs_cls.opens = fs_cls.fetches = 0
    out, device = decoders.decode("countmem://clips/a.mp4", cfg, gpu=gpu)
    assert device == "cuda" and len(out[col.FRAME_TS]) > 0
    assert (fs_cls.opens, fs_cls.fetches) == (1, 0)
    assert given == (["bytes"] if whole_read else [given[0]]) and given[0] != "str"


# --- torchcodec's part, stood in for -----------------------------------------------------
# No GPU here, and torchcodec's CUDA decoder needs one: these tests hand GpuDecoder a
# stand-in for torchcodec's VideoDecoder with its interface (metadata's stream bounds,
# get_frames_played_at, cpu_fallback) that decodes with PyAV on the CPU.
# tests/gpu/test_gpu_decode.py runs the real one where a GPU is.

class FakeFallback:
    """torchcodec's CpuFallbackStatus: truthy when it decoded on the CPU, its text the reason."""

    def __init__(self, reason: str | None):
        self.reason = reason

    def __bool__(self):
        return self.reason is not None

    def __str__(self):
        return f"[CUDA] Fallback status: Falling back due to: {self.reason}" if self.reason else \
            "[CUDA] Fallback status: No fallback required"


def fake_torchcodec(*, load_error: str | None = None, fallback: str | None = None, decode_error=None,
                    begin: float = 0.0, asked: list | None = None):
    """A VideoDecoder class behaving like torchcodec's in the ways under test."""
    import io

    import torch
    from types import SimpleNamespace

    class VideoDecoder:
        def __init__(self, source, *, device="cpu", seek_mode="exact"):
            assert device == "cuda"
            if load_error:
                raise RuntimeError(load_error)
            data = source if isinstance(source, bytes) else (
                open(source, "rb").read() if isinstance(source, str) else source.read())
            with av.open(io.BytesIO(data)) as c:
                s = c.streams.video[0]
                self.frames = [(float(f.time), f.to_ndarray(format="rgb24")) for f in c.decode(s)]
            end = max(self.frames[-1][0], begin) + 1 / 25
            self.metadata = SimpleNamespace(begin_stream_seconds=begin, end_stream_seconds=end)
            self.cpu_fallback = FakeFallback(fallback)

        def get_frames_played_at(self, seconds):
            if asked is not None:
                asked.extend(seconds)
            if decode_error is not None:
                raise decode_error
            md = self.metadata
            for t in seconds:  # torchcodec refuses times outside the stream
                if not md.begin_stream_seconds <= t < md.end_stream_seconds:
                    raise IndexError(f"Invalid pts in seconds: {t}")
            picked = [[img for ts, img in self.frames if ts <= t + 1e-9][-1] for t in seconds]
            return SimpleNamespace(data=torch.from_numpy(np.stack(picked)).permute(0, 3, 1, 2))

    return VideoDecoder


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch says a CUDA device is there (the decoder's start asks it)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA L40S")


def _stage_with(cfg, decoder_cls):
    stage = DecodeStage(cfg)  # decode.device=cpu: the GPU decoder is put in by hand
    stage.gpu = GpuDecoder(cfg, video_decoder=decoder_cls)
    return stage


def _batch(uris):
    return {col.CLIP_ID: np.array([f"c{i}" for i in range(len(uris))], dtype=object),
            col.URI: np.array(uris, dtype=object)}


def test_the_decoder_start_fails_in_one_line_without_ffmpegs_libraries(fake_cuda):
    missing = ("Could not load libtorchcodec. Likely causes:\n  1. FFmpeg is not properly installed in your "
               "environment. We support versions 4, 5, 6, 7, and 8.")
    with pytest.raises(GpuDecodeUnavailable) as err:
        GpuDecoder(load_config(None), video_decoder=fake_torchcodec(load_error=missing))
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("decode.device=cuda: torchcodec cannot load FFmpeg's shared libraries")
    assert "set decode.device=cpu" in msg and "[Could not load libtorchcodec. Likely causes:]" in msg


def test_the_decoder_start_fails_when_torchcodec_would_decode_on_the_cpu(fake_cuda):
    """No `video` driver capability: libnvcuvid is missing and torchcodec quietly
    decodes every clip on the CPU; the start says so instead of rows saying `cuda`."""
    with pytest.raises(GpuDecodeUnavailable, match=r"decodes on the CPU, not on NVDEC \(the driver's video decode "
                       r"library \(libnvcuvid\) is not visible.*NVIDIA_DRIVER_CAPABILITIES=compute,utility,video"):
        GpuDecoder(load_config(None), video_decoder=fake_torchcodec(fallback="NVcuvid unavailable"))


def test_an_actor_without_usable_cuda_says_so_in_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(GpuDecodeUnavailable, match=r"^decode.device=cuda but this process sees no usable CUDA device "
                       r"\(torch .*, built for CUDA .*\); check `nvidia-smi`"):
        GpuDecoder(load_config(None), video_decoder=fake_torchcodec())


def test_torchcodecs_own_cpu_fallback_makes_the_row_cpu_fallback_with_its_reason(fake_cuda, clips_dir, caplog):
    import logging

    cfg = load_config(None, ["mode=sparse"])
    uris = [str(clips_dir / "clip_00000.mp4"), str(clips_dir / "clip_00001.mp4")]
    stage = _stage_with(cfg, fake_torchcodec())
    out = stage(_batch(uris))
    assert list(out[col.DECODE_DEVICE]) == ["cuda", "cuda"]
    # The same decoder, now falling back on this stream by itself (its self-test passed).
    stage.gpu.video_decoder = fake_torchcodec(fallback="Video not supported")
    with caplog.at_level(logging.INFO, logger="emodist"):
        out = stage(_batch(uris))
    assert list(out[col.DECODE_DEVICE]) == ["cpu-fallback", "cpu-fallback"]
    assert "torchcodec decoded it on the CPU ([CUDA] Fallback status: Falling back due to: Video not supported)" \
        in caplog.text
    np.testing.assert_array_equal(out[col.FRAMES][0], decode_clip(uris[0], cfg)[col.FRAMES])


def test_planned_times_are_clamped_to_the_streams_start(fake_cuda, clips_dir):
    """A stream whose first frame starts at 0.3 s: the plan's 0 s keyframe is asked at
    0.3 s (torchcodec refuses times before the stream; the clip would go to the CPU)."""
    asked = []
    cfg = load_config(None, ["mode=sparse"])
    stage = _stage_with(cfg, fake_torchcodec(begin=0.3, asked=asked))
    asked.clear()  # the self-test's own request
    out = stage(_batch([str(clips_dir / "clip_00002.mp4")]))
    assert list(out[col.DECODE_DEVICE]) == ["cuda"]
    assert min(asked) == pytest.approx(0.3) and len(asked) == len(out[col.FRAME_TS][0])


def test_a_cuda_error_that_poisons_the_context_is_fatal_not_a_cpu_fallback(fake_cuda, clips_dir, monkeypatch):
    """An illegal memory access leaves the CUDA context unusable: falling back would move
    the rest of the run to the CPU. Outside Ray the stage raises it; in an actor die_for
    exits the process so that Ray restarts the actor (run.max_actor_restarts)."""
    from emodist.stages import decode as decode_stage

    cfg = load_config(None, ["mode=sparse"])
    uri = str(clips_dir / "clip_00003.mp4")
    for text in ("CUDA error: an illegal memory access was encountered",
                 "cuvidDecodePicture failed: cudaErrorLaunchFailure"):
        stage = _stage_with(cfg, fake_torchcodec())
        stage.gpu.video_decoder = fake_torchcodec(decode_error=RuntimeError(text))
        died = []
        monkeypatch.setattr(decode_stage, "die_for", lambda name, exc: died.append((name, str(exc))) or _raise(exc))
        with pytest.raises(RuntimeError, match=text):
            stage(_batch([uri]))
        assert died == [("decode", text)]
    # An error of the clip, not the device: that clip goes to the CPU, the run goes on.
    stage.gpu.video_decoder = fake_torchcodec(decode_error=RuntimeError("Requested next frame while there are no more frames"))
    assert list(stage(_batch([uri]))[col.DECODE_DEVICE]) == ["cpu-fallback"]


def _raise(exc):
    raise exc
