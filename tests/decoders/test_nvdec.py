"""GPU decoding's CPU-side logic: the NVDEC capability check, the resource request,
the clear error without a GPU, and the per-clip CPU fallback recorded in the row.
(tests/gpu/test_gpu_decode.py compares real GPU frames with CPU frames.)"""

import av
import numpy as np
import pytest

from emodist import schema as col
from emodist.config import load_config
from emodist.decoders.frames import fit_frame
from emodist.decoders.nvdec import GpuDecoder, GpuUnsupported, fit_batch, nvdec_refusal
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
