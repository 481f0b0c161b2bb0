"""The transformers backend: AutoProcessor + AutoModelForImageTextToText, on CPU or GPU.

Works with any chat VLM whose processor takes interleaved images (Qwen2.5-VL,
LLaVA, InternVL, ...), from a hub id or a local folder. Option scoring reads the
next-token log-probabilities of the option letters in one forward pass.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from emodist.config import DescriberConfig, LabelerConfig, Mode
from emodist.models import prompts
from emodist.models.base import ClipInput, Gap, LabelResult
from emodist.models.scoring import PermutationScorer

MAX_PROMPTS_PER_FORWARD = 16  # bounds activation memory on long clips


def resolve_model(model: str) -> str:
    if model == "builtin:tiny-vlm":
        from emodist.models.tiny import ensure_tiny_vlm

        return str(ensure_tiny_vlm())
    return model


class HFVLM:
    """One loaded model; generation and option scoring over chat prompts."""

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto"):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one bar per actor per load is noise in a batch job

        self.model_id = model
        path = resolve_model(model)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = "bfloat16" if device.startswith("cuda") else "float32"
        self.device = device
        self.processor = AutoProcessor.from_pretrained(path)
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"  # the last position is every prompt's next token
        self.model = AutoModelForImageTextToText.from_pretrained(path, dtype=getattr(torch, dtype))
        self.model.to(device).eval()

    def _inputs(self, parts: Sequence[list[prompts.Part]], images: Sequence[Sequence[np.ndarray]]):
        texts = [
            self.processor.apply_chat_template(
                [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
            )
            for p in parts
        ]
        flat = [img for imgs in images for img in imgs]
        kwargs = {"images": flat} if flat else {}
        return self.processor(text=texts, return_tensors="pt", padding=True, **kwargs).to(self.device)

    def generate(self, parts, images, max_new_tokens: int) -> list[str]:
        import torch

        out: list[str] = []
        for s in range(0, len(parts), MAX_PROMPTS_PER_FORWARD):
            inputs = self._inputs(parts[s : s + MAX_PROMPTS_PER_FORWARD], images[s : s + MAX_PROMPTS_PER_FORWARD])
            with torch.inference_mode():
                ids = self.model.generate(
                    **inputs, max_new_tokens=max_new_tokens, do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            new = ids[:, inputs["input_ids"].shape[1] :]
            out += self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return out

    def next_token_logprobs(self, parts, images) -> np.ndarray:
        """(B, vocab) log-probabilities of the token after each prompt."""
        import torch

        rows = []
        for s in range(0, len(parts), MAX_PROMPTS_PER_FORWARD):
            inputs = self._inputs(parts[s : s + MAX_PROMPTS_PER_FORWARD], images[s : s + MAX_PROMPTS_PER_FORWARD])
            with torch.inference_mode():
                # Only the last position's logits: the rest would be ~10% of the compute
                # and gigabytes of bf16 for a real model's vocabulary.
                logits = self.model(**inputs, logits_to_keep=1).logits[:, -1, :].float()
            rows.append(torch.log_softmax(logits, dim=-1).cpu().numpy())
        return np.concatenate(rows)


def clean_description(text: str, max_chars: int = 240) -> str:
    """One line: the first non-empty line of what the model wrote, bounded."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:max_chars]
    return ""


class HFDescriber:
    def __init__(self, cfg: DescriberConfig, vlm: HFVLM | None = None):
        self.cfg = cfg
        self.vlm = vlm or HFVLM(cfg.model, cfg.device, cfg.dtype)
        self.model_id = cfg.model

    def describe(self, gaps: Sequence[Gap]) -> list[str]:
        parts, images = prompts.describe_requests(gaps, self.cfg.prompt)
        return [clean_description(t) for t in self.vlm.generate(parts, images, self.cfg.max_new_tokens)]


class HFLabeler:
    wants_all_frames = False

    def __init__(self, cfg: LabelerConfig, mode: Mode, labels: Sequence[str], seed: int = 0,
                 vlm: HFVLM | None = None):
        self.cfg, self.mode = cfg, mode
        self.vlm = vlm or HFVLM(cfg.model, cfg.device, cfg.dtype)
        self.model_id = cfg.model
        self.scorer = PermutationScorer(self.vlm.tokenizer, labels, cfg.permutations, seed)

    def score(self, clips: Sequence[ClipInput], labels: Sequence[str]) -> list[LabelResult]:
        parts, images = prompts.label_requests(clips, self.scorer.option_orders, self.mode, self.cfg.prompt)
        logprobs = self.vlm.next_token_logprobs(parts, images)
        results = self.scorer.results(self.scorer.letter_logprobs(logprobs), [c.clip_id for c in clips])
        if self.cfg.answer_tokens:
            k = self.scorer.permutations  # the configured label order is each clip's first prompt
            texts = self.vlm.generate(parts[::k], images[::k], self.cfg.answer_tokens)
            for r, t in zip(results, texts, strict=True):
                r.answer = t.strip()
        return results
