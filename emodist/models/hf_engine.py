"""The transformers engine: AutoProcessor + AutoModelForImageTextToText, on CPU or GPU.

Works with any chat VLM whose processor takes interleaved images (Qwen2.5-VL, LLaVA,
InternVL, ...), from a hub id or a local folder. Option scoring reads the next-token
log-probabilities in one forward pass (last position only).

Kept busy: requests are cut into chunks of `prompts_per_forward` prompts; one thread
runs the processor (chat template, tokenizer, image preprocessing: CPU work) on the
next chunks while another runs the model on the current one, so the GPU does not wait
for the CPU between forwards. Small requests waiting at once (a clip's two gap
descriptions, its one label prompt, from the clips of several batches in flight) are
joined into one forward of up to `prompts_per_forward` prompts, as vLLM batches what it
has: a generation step costs about the same for 2 prompts as for 16. A prompt's numbers
in a joined forward equal those of the prompt alone up to float rounding (left padding,
batch size), as vLLM's do. A joined forward that fails is run again request by request,
so a bad request fails only its own caller.
"""
from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emodist.models.engine import Prompt, awaitable

log = logging.getLogger(__name__)

# Chunks prepared ahead of the model: one waits while the model runs; the next is
# gathered only when the model takes it, so requests that came meanwhile join it.
PREPARED_AHEAD = 1
# How long the processor waits for more requests to join a chunk that is not full: the
# clips of a batch send theirs a few ms apart, and one forward of 16 prompts costs about
# what one of 2 does.
JOIN_WAIT_S = 0.005


def resolve_model(model: str) -> str:
    """A model id or folder as transformers and vLLM take it (builtin: names built here)."""
    if model == "builtin:tiny-vlm":
        from emodist.models.tiny import ensure_tiny_vlm

        return str(ensure_tiny_vlm())
    if model == "builtin:tiny-qwen2.5-vl":
        from emodist.models.tiny import ensure_tiny_qwen

        return str(ensure_tiny_qwen())
    return model


def load_processor(path: str):
    """The model's processor; without torchvision (CPU machines), an image-only one.

    transformers builds a Qwen2-VL-family processor with its video processor, which
    needs torchvision; emodist sends frames as images, never as video, so the processor
    is rebuilt from its image processor (the PIL backend) and tokenizer instead."""
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    if not is_torchvision_available() and (_read_json(path, "video_preprocessor_config.json") is not None
                                           or _needs_video_processor(path)):
        log.info("%s: torchvision is not installed; using an image-only processor", path)
        return image_only_processor(path)
    try:
        return AutoProcessor.from_pretrained(path)
    except ImportError as exc:
        if "torchvision" not in str(exc).lower():
            raise
        log.info("%s: torchvision is not installed; using an image-only processor", path)
        return image_only_processor(path)


def _needs_video_processor(path: str) -> bool:
    """True for processor classes built with a video processor (Qwen2-VL family, ...)."""
    import inspect

    import transformers

    config = _read_json(path, "processor_config.json") or _read_json(path, "preprocessor_config.json") or {}
    cls = getattr(transformers, config.get("processor_class") or "", None)
    return cls is not None and "video_processor" in inspect.signature(cls.__init__).parameters


def image_only_processor(path: str):
    """The model's own processor class without its video processor: a subclass whose
    constructor does not take one (transformers decides a processor's parts from its
    constructor's signature), loaded from the model's files like the original."""
    import inspect

    import transformers

    config = _read_json(path, "processor_config.json") or _read_json(path, "preprocessor_config.json") or {}
    name = config.get("processor_class")
    cls = getattr(transformers, name, None) if name else None
    params = list(inspect.signature(cls.__init__).parameters)[1:4] if cls is not None else []
    if params != ["image_processor", "tokenizer", "video_processor"]:
        raise ImportError(
            f"{path}: its processor ({name or 'unnamed'}) needs torchvision and has no image-only "
            "form emodist knows; install torchvision"
        )

    class ImageOnly(cls):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    ImageOnly.__name__ = ImageOnly.__qualname__ = cls.__name__  # what the vLLM engine matches on
    return ImageOnly.from_pretrained(path)


def _read_json(path: str, name: str) -> dict | None:
    import json
    import os

    local = os.path.join(path, name)
    if os.path.isdir(path):
        if not os.path.exists(local):
            return None
        with open(local) as f:
            return json.load(f)
    try:  # a hub id: the file from the local cache (or the hub, where reachable)
        from huggingface_hub import hf_hub_download

        with open(hf_hub_download(path, name)) as f:
            return json.load(f)
    except Exception:  # noqa: BLE001 - absent file: None
        return None


def chat_inputs(processor, prompts: Sequence[Prompt], device: str):
    """The model's tensors for a batch of prompts, through its own chat template, padded
    on the left (the tokenizer's side set by the caller): what inference scores and what
    fine-tuning trains on are the same tokens."""
    texts = [
        processor.apply_chat_template([{"role": "user", "content": p.parts}], add_generation_prompt=True,
                                      tokenize=False)
        for p in prompts
    ]
    flat = [img for p in prompts for img in p.images]
    kwargs = {"images": flat} if flat else {}
    return processor(text=texts, return_tensors="pt", padding=True, **kwargs).to(device)


@dataclass(slots=True)
class _Job:
    kind: str  # "generate" | "logprobs"
    prompts: Sequence[Prompt]
    arg: Any  # max_new_tokens | token ids
    future: concurrent.futures.Future


def _joinable(a: _Job, b: _Job) -> bool:
    """Two requests one forward can serve: the same kind, argument and adapter."""
    return a.kind == b.kind and a.arg == b.arg and a.prompts[0].adapter == b.prompts[0].adapter


class HFEngine:
    """One loaded transformers model; see the module docstring for how it is kept busy."""

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto", *,
                 prompts_per_forward: int = 16, adapters: dict[str, str] | None = None):
        import torch
        from transformers import AutoModelForImageTextToText
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one bar per actor per load is noise in a batch job
        self.model_id = model
        path = resolve_model(model)
        from emodist.devices import auto_device, require_cuda

        if device == "auto":
            device = auto_device()  # in a Ray actor: cuda only with a GPU reserved for it
        elif device.startswith("cuda"):
            require_cuda("the transformers engine's device")
        if dtype == "auto":
            dtype = "bfloat16" if device.startswith("cuda") else "float32"
        self.device = device
        self.prompts_per_forward = prompts_per_forward
        self.processor = load_processor(path)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"  # the last position is every prompt's next token
        model_obj = AutoModelForImageTextToText.from_pretrained(path, dtype=getattr(torch, dtype))
        self.adapters = dict(adapters or {})
        if self.adapters:
            from emodist.models.adapters import attach_adapters

            model_obj = attach_adapters(model_obj, self.adapters)
        self.model = model_obj.to(device).eval()
        self.busy_s = 0.0  # seconds the model thread spent in forwards (for benchmarks)
        self._todo: queue.Queue = queue.Queue()
        self._ready: queue.Queue = queue.Queue()
        self._slots = threading.Semaphore(PREPARED_AHEAD)  # prepared chunks the model has not taken
        self._threads = [threading.Thread(target=self._prepare_loop, name="hf-processor", daemon=True),
                         threading.Thread(target=self._model_loop, name="hf-model", daemon=True)]
        for t in self._threads:
            t.start()

    # --- the protocol -------------------------------------------------------------

    async def generate(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[str]:
        parts = await self._run("generate", prompts, max_new_tokens)
        return [t for chunk in parts for t in chunk]

    async def token_logprobs(self, prompts: Sequence[Prompt], token_ids: Sequence[int]) -> np.ndarray:
        if not prompts:
            return np.zeros((0, len(token_ids)))
        return np.concatenate(await self._run("logprobs", prompts, [int(t) for t in token_ids]))

    def close(self) -> None:
        self._todo.put(None)
        for t in self._threads:
            t.join(timeout=30)

    # --- the two threads ----------------------------------------------------------

    async def _run(self, kind: str, prompts: Sequence[Prompt], arg) -> list:
        import asyncio

        if not prompts:
            return []
        if len({p.adapter for p in prompts}) > 1:
            raise ValueError("one engine call takes one adapter; please report")
        n = self.prompts_per_forward
        futures = []
        for s in range(0, len(prompts), n):
            fut: concurrent.futures.Future = concurrent.futures.Future()
            self._todo.put(_Job(kind, prompts[s : s + n], arg, fut))
            futures.append(awaitable(fut))
        return list(await asyncio.gather(*futures))

    def _prepare_loop(self) -> None:
        held: _Job | None = None  # taken from the queue but not joinable with the last chunk
        stop = False
        while not stop:
            job, held = (held or self._todo.get()), None
            if job is None:
                break
            self._slots.acquire()  # the model has taken the last chunk: gather the next now
            jobs, size = [job], len(job.prompts)
            until = time.monotonic() + JOIN_WAIT_S
            while size < self.prompts_per_forward:
                try:
                    nxt = self._todo.get(timeout=max(0.0, until - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                if not _joinable(job, nxt) or size + len(nxt.prompts) > self.prompts_per_forward:
                    held = nxt
                    break
                jobs.append(nxt)
                size += len(nxt.prompts)
            groups = self._prepared(jobs)
            if not groups:
                self._slots.release()
            for k, group in enumerate(groups):
                if k:
                    self._slots.acquire()
                self._ready.put(group)
        self._ready.put(None)

    def _prepared(self, jobs: list[_Job]) -> list[tuple[list[_Job], Any]]:
        """(jobs, model inputs) of one forward; where the joined requests do not prepare
        (a bad request), each request alone, so that only the bad one fails."""
        try:
            return [(jobs, self._inputs([p for j in jobs for p in j.prompts]))]
        except BaseException as exc:  # noqa: BLE001 - the caller gets it
            if len(jobs) == 1:
                jobs[0].future.set_exception(exc)
                return []
        return [g for j in jobs for g in self._prepared([j])]

    def _model_loop(self) -> None:
        while True:
            item = self._ready.get()
            if item is None:
                return
            self._slots.release()
            jobs, inputs = item
            t0 = time.perf_counter()
            try:
                out = self._forward(jobs[0], inputs)
            except BaseException as exc:  # noqa: BLE001 - the caller decides (clip or fatal)
                if len(jobs) == 1:
                    jobs[0].future.set_exception(exc)
                else:  # one request may be the cause: each again alone
                    for group in (g for j in jobs for g in self._prepared([j])):
                        self._run_alone(group)
            else:
                start = 0
                for j in jobs:
                    j.future.set_result(out[start : start + len(j.prompts)])
                    start += len(j.prompts)
            self.busy_s += time.perf_counter() - t0

    def _run_alone(self, group: tuple[list[_Job], Any]) -> None:
        (job,), inputs = group
        try:
            job.future.set_result(self._forward(job, inputs))
        except BaseException as exc:  # noqa: BLE001 - the caller decides (clip or fatal)
            job.future.set_exception(exc)

    def _forward(self, job: _Job, inputs):
        with self._adapter(job.prompts[0].adapter):
            return self._generate(inputs, job.arg) if job.kind == "generate" else self._logprobs(inputs, job.arg)

    # --- model work ---------------------------------------------------------------

    def _inputs(self, prompts: Sequence[Prompt]):
        return chat_inputs(self.processor, prompts, self.device)

    def _adapter(self, name: str | None):
        """The adapter a chunk asks for (peft), or the base model."""
        import contextlib

        if not self.adapters:
            if name is not None:
                raise ValueError(f"adapter {name!r} asked of an engine loaded without adapters; please report")
            return contextlib.nullcontext()
        if name is None:
            return self.model.disable_adapter()
        self.model.set_adapter(name)
        return contextlib.nullcontext()

    def _generate(self, inputs, max_new_tokens: int) -> list[str]:
        import torch

        with torch.inference_mode():
            ids = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.batch_decode(ids[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    def _logprobs(self, inputs, token_ids: list[int]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            # Only the last position's logits: the rest would be ~10% of the compute
            # and gigabytes of bf16 for a real model's vocabulary.
            logits = self.model(**inputs, logits_to_keep=1).logits[:, -1, :].float()
            return torch.log_softmax(logits, dim=-1)[:, token_ids].cpu().numpy().astype(np.float64)
