"""The VLM describer and labeler, written once over the engine protocol (engine.py).

The describer sends one prompt per gap (its in-between frames) and keeps one line of
what the model writes. The labeler sends one prompt per label order (permutations),
reads the option letters' next-token log-probabilities and turns them into one
distribution over the label set (scoring.py); the answer is the top letter, so no model
text can break the scoring. With `answer_tokens`, the model also writes a short answer
for the configured order, stored as text (never parsed into the distribution).
"""
from __future__ import annotations

from collections.abc import Sequence

from emodist.config import DescriberConfig, LabelerConfig, Mode
from emodist.models import prompts
from emodist.models.base import ClipInput, Gap, LabelResult
from emodist.models.engine import Engine, Prompt
from emodist.models.scoring import PermutationScorer


def clean_description(text: str, max_chars: int = 240) -> str:
    """One line: the first non-empty line of what the model wrote, bounded."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:max_chars]
    return ""


def model_label(model: str, adapter: str | None) -> str:
    """What rows record as the model: the id, plus the adapter when one is loaded."""
    return f"{model}+adapter:{adapter}" if adapter else model


class VLMDescriber:
    def __init__(self, cfg: DescriberConfig, engine: Engine, adapter: str | None = None):
        self.cfg, self.engine, self.adapter = cfg, engine, adapter
        self.model_id = model_label(cfg.model, cfg.adapter)

    async def describe(self, gaps: Sequence[Gap]) -> list[str]:
        parts, images = prompts.describe_requests(gaps, self.cfg.prompt)
        texts = await self.engine.generate(
            [Prompt(p, i, self.adapter) for p, i in zip(parts, images, strict=True)], self.cfg.max_new_tokens)
        return [clean_description(t) for t in texts]


class VLMLabeler:
    wants_all_frames = False

    def __init__(self, cfg: LabelerConfig, mode: Mode, labels: Sequence[str], engine: Engine, seed: int = 0,
                 adapter: str | None = None):
        self.cfg, self.mode, self.engine, self.adapter = cfg, mode, engine, adapter
        self.model_id = model_label(cfg.model, cfg.adapter)
        self.scorer = PermutationScorer(engine.tokenizer, labels, cfg.permutations, seed)
        # Every letter's spellings ('A', ' A', ...), in one list the engine scores.
        self.token_ids = sorted({i for group in self.scorer.letter_ids for i in group})

    async def score(self, clips: Sequence[ClipInput], labels: Sequence[str]) -> list[LabelResult]:
        import numpy as np

        parts, images = prompts.label_requests(clips, self.scorer.option_orders, self.mode, self.cfg.prompt)
        reqs = [Prompt(p, i, self.adapter) for p, i in zip(parts, images, strict=True)]
        compact = await self.engine.token_logprobs(reqs, self.token_ids)
        # Back to token-id columns (up to the largest letter id) for the shared scorer.
        vocab = np.full((len(reqs), self.token_ids[-1] + 1), -np.inf)
        vocab[:, self.token_ids] = compact
        results = self.scorer.results(self.scorer.letter_logprobs(vocab), [c.clip_id for c in clips])
        if self.cfg.answer_tokens:
            k = self.scorer.permutations  # the configured label order is each clip's first prompt
            texts = await self.engine.generate(reqs[::k], self.cfg.answer_tokens)
            for r, t in zip(results, texts, strict=True):
                r.answer = t.strip()
        return results
