"""GPU decoding against CPU decoding on the same clips (needs CUDA and torchcodec).

GPU decoders are not bit-exact (colour conversion and scaling differ): frames must
agree within a mean absolute difference of 6 levels (of 255) and the same timestamps."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs an NVIDIA GPU (CUDA not available)", allow_module_level=True)
pytest.importorskip("torchcodec", reason="needs torchcodec with CUDA support (pip install torchcodec)")

from emodist import schema as col  # noqa: E402
from emodist.config import load_config  # noqa: E402
from emodist.decoders.pyav import decode_clip  # noqa: E402
from emodist.stages.decode import DecodeStage  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("fit", ["pad", "stretch"])
def test_gpu_frames_match_cpu_frames(clips_dir, fit):
    cfg = load_config(None, ["decode.device=cuda", f"decode.fit={fit}"])
    stage = DecodeStage(cfg)
    uris = [str(p) for p in sorted(clips_dir.glob("clip_*.mp4"))[:4]]
    out = stage({col.CLIP_ID: np.array(uris, dtype=object), col.URI: np.array(uris, dtype=object)})
    assert set(out[col.DECODE_DEVICE]) == {"cuda"}
    for i, uri in enumerate(uris):
        cpu = decode_clip(uri, load_config(None, [f"decode.fit={fit}"]))
        np.testing.assert_allclose(out[col.FRAME_TS][i], cpu[col.FRAME_TS])
        diff = np.abs(out[col.FRAMES][i].astype(int) - cpu[col.FRAMES].astype(int))
        assert diff.mean() < 6.0, (uri, diff.mean())
