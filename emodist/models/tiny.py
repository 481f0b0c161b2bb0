"""A tiny LLaVA-style VLM with random weights, built from a config and a tokenizer
trained here: no hub, no download. Tests and the offline demo load it through the
same AutoProcessor / AutoModelForImageTextToText path as a real model. Its labels
are random: it exercises the machinery, it does not recognise emotions.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from emodist.labels import MAFW

TINY_VERSION = "tiny-vlm-v1"
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% endif %}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)


def _corpus() -> list[str]:
    from emodist.models import prompts

    words = " ".join(MAFW) + " " + " ".join(prompts.LETTERS)
    lines = [prompts.DESCRIBE_TEMPLATE, prompts.QUESTION_TEMPLATE, *prompts.INTRO.values(), words]
    lines += ["the brows rise and the mouth opens", "lips move upwards into a brief smile",
              "the eyes narrow", "no visible motion", "Frame at 1.00 s: From 0.00 s to 1.00 s:"]
    return lines * 20


def build_tiny_vlm(out_dir: str | Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor,
                              PreTrainedTokenizerFast)
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<pad>", "<s>", "</s>", "<image>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    image_size, patch = 32, 8
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=image_size, patch_size=patch, projection_dim=32,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",  # drop CLS: 16 tokens per image
    )
    with torch.random.fork_rng(devices=[]):  # the seed is this model's, not the process's
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        ),
        tokenizer=tokenizer, patch_size=patch, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_text_lm(out: Path, seed: int = 0) -> Path:
    """A tiny random text-only Llama for the vLLM CPU build (which runs no vision
    models): head size 32, the smallest vLLM's CPU attention takes, with the tokenizer and
    chat template of emodist's tiny VLM. Its embedding carries a
    constant direction that the LM head reads against every letter but 'A', so it answers
    'A' to every question, with input-dependent log-probs for every token."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from emodist.models import prompts

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
    with torch.random.fork_rng(devices=[]):  # the seed is this model's, not the process's
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


def default_cache() -> Path:
    return Path(os.environ.get("EMODIST_CACHE", Path.home() / ".cache" / "emodist"))


def ensure_tiny_vlm(cache_dir: str | Path | None = None) -> Path:
    """The tiny model's folder, built once; safe when several actors ask at once."""
    target = Path(cache_dir or default_cache()) / TINY_VERSION
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    build_tiny_vlm(tmp)
    try:
        os.rename(tmp, target)
    except OSError:  # another process won the race; its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# --- a tiny Qwen2.5-VL: the real architecture, vocabulary and chat format ----------------

TINY_QWEN_VERSION = "tiny-qwen2.5-vl-v2"
# Qwen2.5-VL's added tokens, ids 151643..151664 (special or not, as its tokenizer_config).
QWEN_ADDED = (("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
              ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
              ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
              ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
              ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
              ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False),
              ("<|fim_pad|>", False), ("<|repo_name|>", False), ("<|file_sep|>", False))
# Qwen2 / Qwen2.5's pre-tokenizer (single digits).
QWEN_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
# Qwen2.5-VL-Instruct's chat_template.json.
QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Qwen2.5-VL-Instruct's preprocessor_config.json.
QWEN_PREPROCESSOR = {
    "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor"}
# Qwen2.5-VL's architecture at the smallest sizes it takes (the real one: 28-36 layers).
# Attention heads of 32 dims (2 query heads, 1 key/value head): vLLM's CPU attention
# takes head sizes from 32 up; mrope_section is the real [16, 24, 24] scaled to them.
QWEN_TINY_TEXT = {"vocab_size": 152064, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                  "num_attention_heads": 2, "num_key_value_heads": 1, "hidden_act": "silu",
                  "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
                  "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]},
                  "bos_token_id": 151643, "eos_token_id": 151645, "pad_token_id": 151643}
QWEN_TINY_VISION = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "hidden_act": "silu",
                    "in_channels": 3, "out_hidden_size": 64, "patch_size": 14, "spatial_merge_size": 2,
                    "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [1],
                    "tokens_per_second": 2}


def qwen_tokenizer(vocab_file: str | Path):
    """Qwen2.5's fast tokenizer from its BPE ranks (`qwen.tiktoken`, as dashscope ships
    them), through transformers' own tiktoken converter, with Qwen2.5-VL's added tokens."""
    import base64

    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class Converter(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(path):  # tiktoken.load.load_tiktoken_bpe, without the tiktoken package
            with open(path, "rb") as f:
                return {base64.b64decode(t): int(r) for t, r in (line.split() for line in f.read().splitlines() if line)}

    tk = Converter(vocab_file=str(vocab_file), pattern=QWEN_PATTERN).converted()
    tk.model.ignore_merges = False  # as Qwen2's tokenizer.json
    tk.normalizer = normalizers.NFC()
    for token, special in QWEN_ADDED:  # one by one: ids follow the list
        (tk.add_special_tokens if special else tk.add_tokens)([AddedToken(token, special=special, normalized=False)])
    specials = [t for t, s in QWEN_ADDED if s]
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None, bos_token=None,
        additional_special_tokens=specials[1:], model_max_length=131072, clean_up_tokenization_spaces=False,
        errors="replace", split_special_tokens=False)
    tok.chat_template = QWEN_CHAT_TEMPLATE
    return tok


def build_tiny_qwen(out_dir: str | Path, vocab_file: str | Path, seed: int = 0) -> Path:
    """A random-weight Qwen2.5-VL laid out like Qwen/Qwen2.5-VL-7B-Instruct's hub folder
    (config, weights, tokenizer, chat template, preprocessor config)."""
    import json

    import torch
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = qwen_tokenizer(vocab_file)
    tok.save_pretrained(out)
    cfg_path = out / "tokenizer_config.json"
    tok_cfg = json.loads(cfg_path.read_text())
    tok_cfg["tokenizer_class"] = "Qwen2Tokenizer"
    cfg_path.write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False))
    (out / "chat_template.json").write_text(json.dumps({"chat_template": QWEN_CHAT_TEMPLATE}, indent=2))
    (out / "preprocessor_config.json").write_text(json.dumps(QWEN_PREPROCESSOR, indent=2))
    config = Qwen2_5_VLConfig(text_config=QWEN_TINY_TEXT, vision_config=QWEN_TINY_VISION,
                              image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                              vision_end_token_id=151653, tie_word_embeddings=True)
    config.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    with torch.random.fork_rng(devices=[]):  # the seed is this model's, not the process's
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(bos_token_id=151643, pad_token_id=151643,
                                               eos_token_id=[151645, 151643], do_sample=False)
    model.save_pretrained(out)
    return out


def ensure_tiny_qwen(cache_dir: str | Path | None = None) -> Path:
    """The tiny Qwen2.5-VL's folder, built once (needs the `qwen_tiktoken` asset)."""
    from emodist import assets

    target = Path(cache_dir or default_cache()) / TINY_QWEN_VERSION
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-qwen-", dir=target.parent))
    build_tiny_qwen(tmp, assets.path("qwen_tiktoken"))
    try:
        os.rename(tmp, target)
    except OSError:  # another process won the race; its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return target
