"""Option scoring shared by the VLM backends: which tokens are the option letters, in
which label orders the options are shown, and how letter log-probabilities become one
distribution over the label set (averaged over label-order permutations)."""
from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from emodist.labels import match_label
from emodist.models.base import LabelResult
from emodist.models.prompts import LETTERS


def letter_token_ids(tokenizer, n_options: int) -> list[list[int]]:
    """For each option letter, the single tokens that spell it ('A', ' A'); a token
    shared by two letters (e.g. a bare space) would blur them, so it is left out."""
    ids: list[list[int]] = []
    for letter in LETTERS[:n_options]:
        cands = {tuple(tokenizer.encode(v, add_special_tokens=False)) for v in (letter, " " + letter)}
        ids.append(sorted({c[0] for c in cands if len(c) == 1}))
    flat = [i for group in ids for i in group]
    ids = [[i for i in group if flat.count(i) == 1] for group in ids]
    bad = [LETTERS[k] for k, group in enumerate(ids) if not group]
    if bad:
        raise ValueError(
            f"the tokenizer has no single token for option letters {bad}; "
            "this model cannot be scored by option letters"
        )
    return ids


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    return (m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))).squeeze(axis)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class PermutationScorer:
    def __init__(self, tokenizer, labels: Sequence[str], permutations: int = 1, seed: int = 0):
        self.labels = tuple(labels)
        self.permutations = permutations
        self.seed = seed
        self.letter_ids = letter_token_ids(tokenizer, len(self.labels)) if tokenizer is not None else None

    def perms(self, clip_id: str) -> list[np.ndarray]:
        """The configured order first, then seeded random orders, stable per clip."""
        n = len(self.labels)
        rng = np.random.default_rng([self.seed, zlib.crc32(clip_id.encode())])
        return [np.arange(n)] + [rng.permutation(n) for _ in range(self.permutations - 1)]

    def option_orders(self, clip_id: str) -> list[list[str]]:
        return [[self.labels[j] for j in p] for p in self.perms(clip_id)]

    def letter_logprobs(self, vocab_logprobs: np.ndarray) -> np.ndarray:
        """(B, vocab) -> (B, L): each letter's log-probability, summed over its spellings."""
        return np.stack([_logsumexp(vocab_logprobs[:, ids], axis=1) for ids in self.letter_ids], axis=1)

    def results(self, letter_logprobs: np.ndarray, clip_ids: Sequence[str]) -> list[LabelResult]:
        """(len(clip_ids) * permutations, L) letter log-probs, in prompt order -> one
        distribution per clip in label order: renormalised over the options, mapped
        back from each shown order, and averaged."""
        from emodist.debias import average_permutations

        k = self.permutations
        out = []
        for c, clip_id in enumerate(clip_ids):
            shown = softmax(letter_logprobs[c * k : (c + 1) * k], axis=1)
            probs = average_permutations(shown, np.stack(self.perms(clip_id)))[0]
            letter = LETTERS[int(np.argmax(shown[0]))]
            out.append(LabelResult(probs=probs, answer=letter))
        return out


def parse_answer(answer: str, options: Sequence[str]) -> str:
    """The option an answer names: 'B', 'B.', '(B) sad' or 'sadness'; '' when none.
    Models do write labels that are not options, and empty answers: never an error."""
    text = (answer or "").strip()
    if not text:
        return ""
    head = text.lstrip("(").split(maxsplit=1)[0].rstrip(".):,")
    if len(head) == 1 and head.upper() in LETTERS[: len(options)]:
        return options[LETTERS.index(head.upper())]
    return match_label(text, options) or match_label(head, options) or ""
