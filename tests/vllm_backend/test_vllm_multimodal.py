"""vLLM's multimodal engine on CPU: the tiny Qwen2.5-VL (the real architecture, Qwen's real
vocabulary and chat template, random weights) served by vLLM's own Qwen2.5-VL processor
and model code, held against the transformers backend on the same folder, prompts and
frames.

One engine serves the module (its start is the slow part); it is built with a LoRA slot,
and prompts that name no adapter are the base model's (checked against transformers).
Run in the vLLM venv: `bash scripts/setup_vllm.sh && .venv-vllm/bin/python -m pytest tests/vllm_backend -q`.
"""
from __future__ import annotations


import numpy as np
import pytest

pytest.importorskip("vllm.sampling_params", reason="vllm is not installed here; run in .venv-vllm (bash scripts/setup_vllm.sh)")

from emodist.config import DescriberConfig, LabelerConfig, load_config  # noqa: E402
from emodist.models import prompts  # noqa: E402
from emodist.models.base import ClipInput, Gap  # noqa: E402
from emodist.models.engine import Prompt, run_sync  # noqa: E402
from emodist.models.hf_engine import HFEngine  # noqa: E402
from emodist.models.vllm_engine import VLLMEngine, qwen_pixel_bounds  # noqa: E402
from emodist.models.vlm import VLMDescriber, VLMLabeler  # noqa: E402

LABELS = ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]
SIZE = 224
MAX_IMAGES = 4
IMAGE_PAD = 151655  # <|image_pad|>: one per image token after the processor expands it
pytestmark = pytest.mark.usefixtures("vllm_env")  # tests/vllm_backend/conftest.py
# Both engines compute in float32 on the same weights; they differ in kernels only
# (vLLM's CPU paged attention and its own vision-tower code against transformers' eager
# attention), so the option log-probs agree to float32 rounding through 4 layers, far
# below the spread of the numbers they are compared on (checked > 0.05 below).
LOGPROB_ATOL = 1e-3


@pytest.fixture(scope="module")
def tiny_qwen(fetched):
    from emodist.models.tiny import ensure_tiny_qwen

    return ensure_tiny_qwen()


@pytest.fixture(scope="module")
def adapter(tiny_qwen, tmp_path_factory):
    """A random (non-zero) LoRA on the language model, laid out as `emodist finetune`
    writes it (peft's folder, targets from lora_target_modules), and the same model
    through transformers + peft."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from emodist.models.adapters import lora_target_modules

    torch.manual_seed(0)
    base = AutoModelForImageTextToText.from_pretrained(str(tiny_qwen), dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                            target_modules=lora_target_modules(base, ["language"])))
    folder = tmp_path_factory.mktemp("lora") / "adapter"
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def engine(tiny_qwen, adapter):
    eng = VLLMEngine(LabelerConfig(model=str(tiny_qwen), device="cpu", max_model_len=4096,
                                   max_images_per_prompt=MAX_IMAGES),
                     image_size=(SIZE, SIZE), adapters={"labeler": str(adapter)})
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def hf(tiny_qwen, adapter):
    eng = HFEngine(str(tiny_qwen), device="cpu", adapters={"labeler": str(adapter)})
    yield eng
    eng.close()


def frames(n: int, seed: int, size: int = SIZE) -> np.ndarray:
    """Smooth random frames (a face-sized blob on a gradient), different per seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        cy, cx, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.1, 0.3)]
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / r**2)
        img = np.stack([blob * rng.uniform(80, 255), xx * rng.uniform(0, 255), yy * rng.uniform(0, 255)], -1)
        out.append(img.clip(0, 255).astype(np.uint8))
    return np.stack(out)


def clip(i: int, n: int = 3) -> ClipInput:
    texts = ["the brows rise and the mouth opens", "lips move upwards into a brief smile", "the eyes narrow"]
    return ClipInput(
        clip_id=f"clip-{i}", keyframes=frames(n, i), keyframe_ts_s=np.arange(n, dtype=np.float64),
        descriptions=[texts[(i + k) % 3] for k in range(n - 1)],
        gap_spans_s=[(float(k), float(k + 1)) for k in range(n - 1)],
    )


def labeler(engine, mode: str = "msce", permutations: int = 1, adapter: str | None = None, **kw) -> VLMLabeler:
    cfg = LabelerConfig(backend="vllm", model=engine.model_id, device="cpu", permutations=permutations, **kw)
    return VLMLabeler(cfg, mode, LABELS, engine, seed=3, adapter=adapter)


def engine_input(engine, request: dict) -> dict:
    return engine._call(engine._render(request)).result()


def test_image_tokens_per_frame_are_as_qwen_counts_them(engine, hf):
    """64 image tokens per 224 px frame, 256 per 448 px (14 px patches merged 2 x 2), by
    vLLM's own processor; the same count as the transformers processor."""
    c = clip(0, n=2)
    parts = prompts.label_prompt("sparse", c.keyframe_ts_s, c.descriptions, c.gap_spans_s, LABELS)
    request = engine.request(Prompt(parts, list(c.keyframes)))
    assert request["prompt"].count("<|image_pad|>") == 2  # one placeholder per frame, as the chat template writes
    ids = engine_input(engine, request)["prompt_token_ids"]
    assert ids.count(IMAGE_PAD) == 2 * 64
    from emodist.models.hf_engine import chat_inputs

    hf_ids = chat_inputs(hf.processor, [Prompt(parts, list(c.keyframes))], "cpu")["input_ids"][0].tolist()
    assert hf_ids.count(IMAGE_PAD) == 2 * 64 and len(hf_ids) == len(ids)

    big = frames(2, 1, size=448)
    request = engine.request(Prompt(parts, list(big)))
    request["mm_processor_kwargs"] = qwen_pixel_bounds(448, 448)  # the engine's are 224's
    assert engine_input(engine, request)["prompt_token_ids"].count(IMAGE_PAD) == 2 * 256


def test_frames_reach_vllm_as_arrays_at_the_processors_size_and_score_as_pil_images(engine):
    """The front-end lever: frames go to vLLM as the decode stage's uint8 arrays, at the
    size Qwen's processor keeps (224 px: a 16 x 16 patch grid, no resize), with the
    pixels normalized on the device (vLLM ships raw uint8 patches). They render to the
    same tokens and pixels as the PIL images the engine sent before, and score the same
    option log-probs."""
    import torch
    from PIL import Image

    assert engine.frontend == {"device_normalize": True, "frame_size": (SIZE, SIZE), "processor_size": (SIZE, SIZE)}
    c = clip(4, n=2)
    parts = prompts.label_prompt("sparse", c.keyframe_ts_s, c.descriptions, c.gap_spans_s, LABELS)
    request = engine.request(Prompt(parts, list(c.keyframes)))
    sent = request["multi_modal_data"]["image"]
    assert all(isinstance(f, np.ndarray) and f.dtype == np.uint8 and f.shape == (SIZE, SIZE, 3) for f in sent)
    as_pil = dict(request, multi_modal_data={"image": [Image.fromarray(f) for f in sent]})
    new, old = engine_input(engine, request), engine_input(engine, as_pil)
    assert new["prompt_token_ids"] == old["prompt_token_ids"]
    for a, b in zip(new["mm_kwargs"]["image"], old["mm_kwargs"]["image"]):
        assert a["image_grid_thw"].data.tolist() == [1, SIZE // 14, SIZE // 14]  # the frame's own size
        assert a["pixel_values"].data.dtype == torch.uint8 and a["pixel_values"].data.equal(b["pixel_values"].data)

    lab = labeler(engine, "sparse")
    reqs = [Prompt(parts, list(c.keyframes))]
    got = run_sync(engine.token_logprobs(reqs, lab.token_ids))
    build = engine.request
    try:  # the engine as it was: PIL images
        engine.request = lambda p: dict(build(p), multi_modal_data={
            "image": [Image.fromarray(np.asarray(i)) for i in p.images]})
        before = run_sync(engine.token_logprobs(reqs, lab.token_ids))
    finally:
        del engine.request
    np.testing.assert_allclose(got, before, atol=LOGPROB_ATOL)


def test_frames_off_qwens_grid_are_warned_about_at_start(tiny_qwen, caplog):
    """Frames whose sides are not multiples of 28 px are resized by Qwen's processor on
    vLLM's one thread (256 px frames even up to 280); the engine says so at start with
    the fix, and says nothing for frames on the grid."""
    import logging
    from types import SimpleNamespace

    from emodist.models.hf_engine import load_processor
    from emodist.models.vllm_engine import qwen_target_size

    assert qwen_target_size(224, 224) == (224, 224) and qwen_target_size(252, 448) == (252, 448)
    assert qwen_target_size(256, 256) == (280, 280)
    eng = VLLMEngine.__new__(VLLMEngine)  # the start-up check only
    eng.model_id, eng.max_images, eng.processor = "tiny-qwen", MAX_IMAGES, load_processor(str(tiny_qwen))
    eng.engine = SimpleNamespace(model_config=SimpleNamespace(
        multimodal_config=SimpleNamespace(mm_device_do_normalize=True)))
    with caplog.at_level(logging.WARNING, logger="emodist.models.vllm_engine"):
        assert eng._frontend((448, 252))["processor_size"] == (252, 448)
        assert not caplog.records
        assert eng._frontend((256, 256))["processor_size"] == (280, 280)
    assert "frames of 256x256 are resized to 280x280" in caplog.text and "multiple of 28 px" in caplog.text


def test_option_distributions_equal_the_transformers_backend(engine, hf):
    """Same folder, prompts and frames: the option letters' log-probs agree within
    LOGPROB_ATOL (see there), so the distributions and answers are the same."""
    clips = [clip(i) for i in range(3)]
    for mode in ("msce", "sparse"):
        lab_v, lab_h = labeler(engine, mode, permutations=2), labeler(hf, mode, permutations=2)
        parts, images = prompts.label_requests(clips, lab_v.scorer.option_orders, mode, None)
        reqs = [Prompt(p, i) for p, i in zip(parts, images)]
        got = run_sync(engine.token_logprobs(reqs, lab_v.token_ids))
        ref = run_sync(hf.token_logprobs(reqs, lab_h.token_ids))
        np.testing.assert_allclose(got, ref, atol=LOGPROB_ATOL)
        assert np.ptp(ref) > 0.05  # the numbers vary with the prompt: the check is not vacuous
        for v, h in zip(run_sync(lab_v.score(clips, LABELS)), run_sync(lab_h.score(clips, LABELS))):
            np.testing.assert_allclose(v.probs, h.probs, atol=1e-3)
            assert v.answer == h.answer


def test_greedy_descriptions_are_identical_to_transformers(engine, hf):
    """MSCE stage 1: each gap's in-between frames become the same greedy text."""
    gaps = [Gap(f"c{g}", g, float(g), g + 1.0, frames(4, 10 + g), np.linspace(g + 0.25, g + 1.0, 4))
            for g in range(3)]
    cfg = DescriberConfig(backend="vllm", model=engine.model_id, device="cpu", max_new_tokens=12)
    got = run_sync(VLMDescriber(cfg, engine).describe(gaps))
    want = run_sync(VLMDescriber(cfg, hf).describe(gaps))
    assert got == want
    assert all(isinstance(t, str) and "\n" not in t for t in got) and any(got)


def test_msce_describes_then_labels_with_both_stages_on_one_engine(engine):
    """Stage 1's descriptions go into stage 2's prompt, on the same engine."""
    cfg = DescriberConfig(backend="vllm", model=engine.model_id, device="cpu", max_new_tokens=8)
    describer, lab = VLMDescriber(cfg, engine), labeler(engine)
    assert describer.engine is lab.engine
    clips = []
    for i in range(3):
        c = clip(20 + i)
        gaps = [Gap(c.clip_id, g, s, e, frames(4, 100 * i + g), np.linspace(s + 0.25, e, 4))
                for g, (s, e) in enumerate(c.gap_spans_s)]
        c.descriptions = run_sync(describer.describe(gaps))
        clips.append(c)
    results = run_sync(lab.score(clips, LABELS))
    assert [len(c.descriptions) for c in clips] == [2, 2, 2]
    for r in results:
        assert r.probs.shape == (len(LABELS),) and r.probs.sum() == pytest.approx(1)
    # The descriptions are read: other text, other numbers.
    blank = [ClipInput(c.clip_id, c.keyframes, c.keyframe_ts_s, ["no visible motion"] * 2, c.gap_spans_s)
             for c in clips]
    assert not np.allclose(results[0].probs, run_sync(lab.score(blank, LABELS))[0].probs)


def test_label_order_permutations_average_back_to_the_labels(engine, hf):
    k = 3
    lab = labeler(engine, permutations=k)
    clips = [clip(i) for i in range(2)]
    for c, r in zip(clips, run_sync(lab.score(clips, LABELS))):
        perms = lab.scorer.perms(c.clip_id)
        assert len(perms) == k and any((p != perms[0]).any() for p in perms[1:])
        assert r.probs.sum() == pytest.approx(1)
    for v, h in zip(run_sync(lab.score(clips, LABELS)), run_sync(labeler(hf, permutations=k).score(clips, LABELS))):
        np.testing.assert_allclose(v.probs, h.probs, atol=1e-3)


def test_a_lora_adapter_on_the_vlm_scores_as_peft_does(engine, hf):
    """The adapter `emodist finetune` writes, through vLLM's LoRA request: transformers +
    peft's numbers; the base model stays reachable on the same engine."""
    clips = [clip(i) for i in range(3)]
    with_v, with_h = labeler(engine, adapter="labeler"), labeler(hf, adapter="labeler")
    parts, images = prompts.label_requests(clips, with_v.scorer.option_orders, "msce", None)
    got = run_sync(engine.token_logprobs([Prompt(p, i, "labeler") for p, i in zip(parts, images)], with_v.token_ids))
    ref = run_sync(hf.token_logprobs([Prompt(p, i, "labeler") for p, i in zip(parts, images)], with_h.token_ids))
    np.testing.assert_allclose(got, ref, atol=2e-3)
    base = run_sync(engine.token_logprobs([Prompt(p, i) for p, i in zip(parts, images)], with_v.token_ids))
    assert np.abs(got - base).max() > 0.05  # the adapter moves the numbers: the check is not vacuous


def test_contextual_calibration_scores_gray_frames_as_transformers(engine, hf):
    """Content-free prompts with images (gray frames, empty descriptions), per prompt
    shape: the same content-free distribution on both backends, and it moves the clip's."""
    from emodist.stages.label import _RowDebias

    cfg = load_config(None, ["labeler.debias=contextual", "mode=msce"])
    c = clip(5)
    raw = run_sync(labeler(engine).score([c], LABELS))[0].probs
    got = run_sync(_RowDebias(cfg, labeler(engine)).content_free(c))
    want = run_sync(_RowDebias(cfg, labeler(hf)).content_free(c))
    np.testing.assert_allclose(got, want, atol=1e-3)
    calibrated = run_sync(_RowDebias(cfg, labeler(engine))(raw, c))
    assert calibrated.sum() == pytest.approx(1) and not np.allclose(calibrated, raw)


def test_more_images_than_the_engine_takes_are_refused_clearly(engine):
    lab = labeler(engine, mode="sparse")
    with pytest.raises(ValueError, match=f"{MAX_IMAGES + 1} images in one prompt, more than max_images_per_prompt"):
        run_sync(lab.score([clip(0, n=MAX_IMAGES + 1)], LABELS))
    (ok,) = run_sync(lab.score([clip(1, n=MAX_IMAGES)], LABELS))  # the engine still serves
    assert ok.probs.sum() == pytest.approx(1)
