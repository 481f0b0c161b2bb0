"""The engine seam: what a VLM backend must do, and nothing more.

An *engine* is one loaded model (transformers in `hf_engine.py`, vLLM in
`vllm_engine.py`) that answers two kinds of request over chat prompts with images:
greedy generation (the describer's motion-to-text) and the next-token log-probabilities
of given token ids (the labeler's option letters). The VLM describer and labeler
(`vlm.py`) are written once against this protocol; an actor builds one engine per
distinct model (`registry.build_models`) and both MSCE stages share it.

Both calls are coroutines and may be awaited from any event loop: an engine runs its own
worker threads (or its own event loop) and hands results back as futures, so many clips
of several batches can have requests in flight at once while the engine stays busy.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from emodist.models.prompts import Part


@dataclass(frozen=True, slots=True)
class Prompt:
    """One chat prompt: content parts (text and image placeholders, see prompts.py) and
    the images in the order of their placeholders; `adapter` names a LoRA adapter (None:
    the base model)."""

    parts: list[Part]
    images: list[np.ndarray] = field(default_factory=list)
    adapter: str | None = None


@runtime_checkable
class Engine(Protocol):
    model_id: str
    tokenizer: Any

    async def generate(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[str]:
        """Greedy continuation of each prompt ('' where the model wrote nothing)."""
        ...

    async def token_logprobs(self, prompts: Sequence[Prompt], token_ids: Sequence[int]) -> np.ndarray:
        """(len(prompts), len(token_ids)) next-token log-probabilities of `token_ids`
        after each prompt (full-vocabulary log-softmax values, or values over
        `token_ids` only, which differ from those by one constant per row)."""
        ...

    def close(self) -> None:
        """Stop the engine's threads or processes."""
        ...


def awaitable(fut: concurrent.futures.Future) -> asyncio.Future:
    """A thread-side future as something the calling event loop can await."""
    return asyncio.wrap_future(fut)


def run_sync(coro):
    """Run one engine coroutine from synchronous code (tests, scripts): engines do their
    work on their own threads, so any event loop can wait for them."""
    return asyncio.run(coro)
