"""The vLLM engine: vLLM's async engine (`AsyncLLM`), created inside the stage's actor.

It answers the engine protocol (engine.py) like the transformers engine: the same
prompts (prompts.py's parts rendered by the model's own HF chat template), the same
option scoring, the same outputs. Requests from every clip of every batch in flight go
to the engine as they arrive; vLLM batches them continuously. At most about 1.1 x
`max_num_seqs` requests are pending at once (Ray's own LLM stage does the same), so the
scheduler always has the next ones without the actor holding thousands of images.

The engine runs on an event loop of its own, on a thread of its own: callers on any
loop (Ray's UDF loop, `asyncio.run` in tests) await futures from it. Requests with
images are built (chat template, frames checked) in a small thread pool, and for
Qwen2-VL-family processors the pixel bounds are set to the frames' own size (`mm_processor_kwargs`): the frames arrive at the model's
size from the decode stage, so the front-end does no resizing, and start-up profiling
uses the real image size instead of Qwen's 12.8 M-pixel maximum.

vLLM preprocesses every image on one thread per engine (its renderer's multimodal
executor, one worker whatever `renderer_num_workers` says), so its cost per frame
bounds the engine's image rate (benchmarks/frontend_cost.py, benchmarks/model_stage.py).
What keeps it small: frames go to vLLM as the decode stage's uint8 arrays, not PIL
images (vLLM would hash and convert each PIL image on that thread: ~25% of a 448 px
frame's cost); frame sides that are multiples of Qwen's 28 px patch grid make the resize
a no-op (the engine warns at start when they are not); vLLM normalizes Qwen2-VL-family
pixels on the GPU (`mm_device_do_normalize`, its default there; `frontend` says whether
it is on). Where one thread still cannot feed the GPU, `engines_per_gpu` puts several
engines, each with its own thread, on one GPU, each with its share of the memory.

Option scoring needs the log-probability of every option letter at the next token.
Two ways, chosen by what the installed vLLM offers:
- `SamplingParams(logprob_token_ids=<letter ids>)` (vLLM 0.28+): the log-probs of exactly
  these tokens from the engine's `raw_logprobs` (the full-vocabulary log-softmax), the
  numbers the transformers engine reads;
- older vLLM: `allowed_token_ids=<letter ids>`, `logprobs=len(ids)` and
  `logprobs_mode="processed_logprobs"`: log-softmax over the letters only, one constant
  per prompt away from the raw values (the scorer's renormalisation cancels it).
An engine-core death raises vLLM's EngineDeadError, which the stage treats as fatal.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import uuid
from collections.abc import Sequence

import numpy as np

from emodist.config import ModelConfig
from emodist.models import prompts
from emodist.models.engine import Prompt
from emodist.models.hf_engine import load_processor, resolve_model

log = logging.getLogger(__name__)

# KV cache of a CPU engine unless VLLM_CPU_KVCACHE_SPACE (GiB) says otherwise: vLLM's
# CPU default is a share of all RAM, which several actors on one machine cannot all take.
CPU_KV_CACHE_BYTES = 1 << 30
# More than any label set's letters in their two spellings ('A', ' A').
MAX_LOGPROBS = 2 * len(prompts.LETTERS)
# Pending requests per engine, as a multiple of max_num_seqs.
PENDING_FACTOR = 1.1
QWEN_VL_PROCESSORS = ("Qwen2VLProcessor", "Qwen2_5_VLProcessor", "Qwen3VLProcessor")
# Qwen2/2.5-VL's resize grid: 14 px patches merged 2 x 2 (Qwen3-VL's processor says 16 x 2).
QWEN_FACTOR = 28


def supports_logprob_token_ids() -> bool:
    from vllm import SamplingParams

    try:
        SamplingParams(max_tokens=1, logprob_token_ids=[0])
    except TypeError:
        return False
    return True


def platform_for(device: str) -> str:
    """'cpu' or 'cuda' for the installed vLLM, checked against the configured device."""
    from vllm.platforms import current_platform

    kind = "cpu" if current_platform.is_cpu() else "cuda"
    want = device.split(":", 1)[0]
    if want not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={device!r}: the vllm backend takes 'auto', 'cpu' or 'cuda[:N]'")
    if want != "auto" and want != kind:
        fix = ("install the CPU build in its own venv (scripts/setup_vllm.sh)" if want == "cpu"
               else "install the official vllm on a GPU machine")
        raise ValueError(f"device={device!r}, but the installed vLLM runs on {kind}; "
                         f"set device=auto or {fix}")
    if want == "cuda" and ":" in device:
        pick_gpu(device)
    return kind


def pick_gpu(device: str) -> None:
    """'cuda:N' for vLLM, which takes its GPU from CUDA_VISIBLE_DEVICES (it has no device
    index). Ray sets the variable for the actors it gives GPUs; a Ray actor left without
    it owns its process and sets it. Anywhere else the environment is the caller's (a
    notebook, a test, the driver of several runs): it is never written there, so
    cuda:N with N > 0 is refused with the way to ask for that GPU."""
    from emodist.devices import ray_gpu_ids

    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return
    index = device.split(":", 1)[1]
    if ray_gpu_ids() is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = index
    elif index != "0":  # cuda:0 is the first visible GPU already
        raise ValueError(f"device={device!r} outside a Ray actor: vLLM takes its GPU from CUDA_VISIBLE_DEVICES, "
                         "which emodist writes only in the Ray actors it starts; set "
                         f"CUDA_VISIBLE_DEVICES={index} in this process's environment and device=cuda")


def qwen_pixel_bounds(height: int, width: int) -> dict:
    """Qwen2-VL-family processor bounds that keep an image at its own size: `size`'s edges
    are pixel counts there. (min_pixels/max_pixels mean the same, but transformers 5.19+
    warns that they go in 5.23.)"""
    pixels = height * width
    return {"size": {"shortest_edge": pixels, "longest_edge": pixels}}


def qwen_target_size(height: int, width: int, factor: int = QWEN_FACTOR) -> tuple[int, int]:
    """(height, width) Qwen's processor resizes a frame of this size to, with the pixel
    bounds of qwen_pixel_bounds: the frame itself when both sides are multiples of
    `factor`, else the nearest grid size (upward when rounding would lose pixels)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    pixels = height * width
    return tuple(smart_resize(height, width, factor=factor, min_pixels=pixels, max_pixels=pixels))


def frame_array(image) -> np.ndarray:
    """A frame as vLLM takes it without per-image conversion work on its preprocessing
    thread: a C-contiguous uint8 (height, width, 3) array, as the decode stage makes."""
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"a frame of shape {a.shape} and dtype {a.dtype}; the engine takes uint8 RGB "
                         "(height, width, 3) frames as the decode stage makes them")
    return np.ascontiguousarray(a)


def renderer_of(engine) -> tuple | None:
    """(parse_model_prompt, the engine's renderer) where vLLM renders prompts before
    `generate` (0.32+: a raw prompt dict there is deprecated), else None."""
    try:  # where 0.32-0.34 define it (vllm.inputs does not re-export it, whatever
        # AsyncLLM.generate's docstring says)
        from vllm.renderers.inputs.preprocess import parse_model_prompt
    except ImportError:
        try:
            from vllm.inputs import parse_model_prompt
        except ImportError:
            return None
    renderer = getattr(engine, "renderer", None)
    if renderer is None or not hasattr(renderer, "render_cmpl_async"):
        return None
    return parse_model_prompt, renderer


class VLLMEngine:
    """One vLLM async engine behind the engine protocol."""

    def __init__(self, cfg: ModelConfig, *, seed: int = 0, images: bool = True,
                 image_size: tuple[int, int] | None = None, adapters: dict[str, str] | None = None):
        self.model_id = cfg.model
        path = resolve_model(cfg.model)
        self.platform = platform_for(cfg.device)
        # The HF processor renders the chat template exactly as the transformers engine does.
        self.processor = load_processor(path)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        multimodal = hasattr(self.processor, "image_processor")  # text-only: a bare tokenizer
        self.max_images = cfg.max_images_per_prompt if images and multimodal else 0
        self.token_ids_api = supports_logprob_token_ids()
        self.adapters = {name: (i + 1, p) for i, (name, p) in enumerate(sorted((adapters or {}).items()))}
        self.engine_kwargs = self._engine_kwargs(cfg, path, seed, multimodal, image_size)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="vllm-images")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm-engine", daemon=True)
        self._thread.start()
        self._pending = None
        self._renderer = None
        self.engine = self._call(self._start(cfg.max_num_seqs)).result()
        self._renderer = renderer_of(self.engine)
        self.frontend = self._frontend(image_size)
        # The transformers engine's greedy generate applies the model's generation_config,
        # of which only repetition_penalty changes a greedy answer (Qwen2.5-VL ships 1.05).
        self.repetition_penalty = float(
            (self.engine.model_config.get_diff_sampling_param() or {}).get("repetition_penalty", 1.0))

    def _engine_kwargs(self, cfg: ModelConfig, path: str, seed: int, multimodal: bool,
                       image_size: tuple[int, int] | None) -> dict:
        dtype = cfg.dtype
        if dtype == "auto":  # as the transformers engine: bfloat16 on GPU, float32 on CPU
            dtype = "bfloat16" if self.platform == "cuda" else "float32"
        kwargs: dict = dict(
            model=path, dtype=dtype, seed=seed, tensor_parallel_size=cfg.tensor_parallel_size,
            enable_prefix_caching=cfg.enable_prefix_caching, max_logprobs=MAX_LOGPROBS,
            max_num_seqs=cfg.max_num_seqs,
            logprobs_mode="raw_logprobs" if self.token_ids_api else "processed_logprobs",
        )
        if multimodal:  # older vLLM refuses the limits for text-only models
            # Frames go in as images, never as video; 0 of everything (text mode) lets
            # vLLM skip the vision tower.
            kwargs["limit_mm_per_prompt"] = {"image": self.max_images}
            if hasattr(self.processor, "video_processor"):
                kwargs["limit_mm_per_prompt"]["video"] = 0
            if image_size and type(self.processor).__name__ in QWEN_VL_PROCESSORS:
                kwargs["mm_processor_kwargs"] = qwen_pixel_bounds(*image_size)
        if cfg.max_model_len is not None:
            kwargs["max_model_len"] = cfg.max_model_len
        if self.adapters:
            kwargs.update(enable_lora=True, max_loras=len(self.adapters),
                          max_lora_rank=lora_slot_rank(max(_lora_rank(p) for _, p in self.adapters.values())))
        if self.platform == "cuda":
            # The GPU's share, split between the engines that share it.
            kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization / cfg.engines_per_gpu
        else:
            kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
            # torch.compile warm-up takes ~30 s per engine on a small CPU; the CPU build
            # serves tests and small runs, where start-up dominates.
            kwargs["enforce_eager"] = True
        return kwargs

    def _frontend(self, image_size: tuple[int, int] | None) -> dict:
        """What decides the preprocessing cost per frame on vLLM's one thread, read from
        the engine (logged; the tests check it): whether the GPU normalizes the pixels,
        and whether frames of `image_size` (width, height) are resized."""
        mm = getattr(self.engine.model_config, "multimodal_config", None)
        out = {"device_normalize": bool(getattr(mm, "mm_device_do_normalize", False)), "frame_size": None,
               "processor_size": None}
        if not (self.max_images and image_size and type(self.processor).__name__ in QWEN_VL_PROCESSORS):
            return out
        (w, h), ip = image_size, self.processor.image_processor
        try:
            target = qwen_target_size(h, w, ip.patch_size * ip.merge_size)
        except ValueError as exc:  # e.g. an aspect ratio over 200: the processor refuses each request
            log.warning("%s: frames of %dx%d: %s", self.model_id, w, h, exc)
            return out
        out.update(frame_size=(h, w), processor_size=target)
        if target != (h, w):
            log.warning("%s: frames of %dx%d are resized to %dx%d by Qwen's processor on vLLM's one preprocessing "
                        "thread per engine; decode at a multiple of %d px (decode.width/height, or face.size) to "
                        "skip it", self.model_id, w, h, target[1], target[0], ip.patch_size * ip.merge_size)
        if not out["device_normalize"]:
            log.warning("%s: vLLM normalizes the pixels on the CPU (mm_device_do_normalize is off), about 3x the "
                        "preprocessing per frame; unset VLLM_USE_RUST_FRONTEND, or raise engines_per_gpu",
                        self.model_id)
        return out

    async def _start(self, max_num_seqs: int):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self._pending = asyncio.Semaphore(max(1, int(PENDING_FACTOR * max_num_seqs)))
        engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**self.engine_kwargs))
        try:
            for name in self.adapters:
                # Loaded now: a LoRA request for a missing adapter inside generate() kills
                # the whole engine; add_lora fails alone, with the path in the message.
                await engine.add_lora(self._lora(name))
        except BaseException:
            engine.shutdown()
            raise
        return engine

    def _call(self, coro) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    # --- the protocol -------------------------------------------------------------

    async def generate(self, prompts_: Sequence[Prompt], max_new_tokens: int) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens,
                                repetition_penalty=self.repetition_penalty)
        outs = await asyncio.wrap_future(self._call(self._all(prompts_, params)))
        return [(o.outputs[0].text or "") if o.outputs else "" for o in outs]

    async def token_logprobs(self, prompts_: Sequence[Prompt], token_ids: Sequence[int]) -> np.ndarray:
        from vllm import SamplingParams

        ids = [int(t) for t in token_ids]
        if not prompts_:
            return np.zeros((0, len(ids)))
        if self.token_ids_api:
            params = SamplingParams(temperature=0.0, max_tokens=1, logprob_token_ids=ids, allowed_token_ids=ids)
        else:
            params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=len(ids), allowed_token_ids=ids)
        outs = await asyncio.wrap_future(self._call(self._all(prompts_, params)))
        rows = np.full((len(outs), len(ids)), -np.inf)
        for r, o in enumerate(outs):
            step = o.outputs[0].logprobs if o.outputs else None
            if not step:
                raise RuntimeError(f"vLLM returned no log-probs for prompt {r} of {len(outs)}; please report")
            for c, t in enumerate(ids):
                if t in step[0]:
                    rows[r, c] = step[0][t].logprob
                elif self.token_ids_api:
                    raise RuntimeError(f"vLLM returned no log-prob for token {t}; please report")
        return rows

    def close(self) -> None:
        if getattr(self, "engine", None) is not None:
            self.engine.shutdown()
            self.engine = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._pool.shutdown(wait=False)

    # --- on the engine's loop -----------------------------------------------------

    async def _all(self, prompts_: Sequence[Prompt], params) -> list:
        return await asyncio.gather(*(self._one(p, params) for p in prompts_))

    async def _one(self, prompt: Prompt, params):
        # Prompts with images are built off the loop; a text-only prompt in place.
        request = (await asyncio.wrap_future(self._pool.submit(self.request, prompt)) if prompt.images
                   else self.request(prompt))
        lora = self._lora(prompt.adapter)
        async with self._pending:
            engine_input = await self._render(request)
            final = None
            async for out in self.engine.generate(engine_input, params, uuid.uuid4().hex, lora_request=lora):
                final = out
        if final is not None and final.outputs and final.outputs[0].finish_reason == "error":
            # The core failed this request alone (e.g. its images could not be processed):
            # a clip's error, with the reason in the engine's log.
            raise RuntimeError("vLLM's engine failed this request (finish_reason=error; the engine log says why)")
        return final

    async def _render(self, request: dict):
        """The request as vLLM's renderer makes it (tokens, processed images), the input
        `generate` takes without its deprecation notice for raw prompts (vLLM 0.32+);
        older vLLM takes the raw dict and renders it itself."""
        if self._renderer is None:
            return request
        parse, renderer = self._renderer
        # skip_mm_cache: the renderer's shared cache sends an image it has seen only as a
        # hash, trusting the engine core to have received the first request that carried
        # it; requests rendered here reach the core in completion order, not render
        # order, so a permutation prompt could arrive first and fail ("Multi-modal cache
        # miss"). Processed images are still cached on this side (processor-only cache).
        (engine_input,) = await renderer.render_cmpl_async([parse(self.engine.model_config, request)],
                                                           skip_mm_cache=True)
        return engine_input

    def _lora(self, name: str | None):
        if name is None:
            return None
        from vllm.lora.request import LoRARequest

        lora_id, path = self.adapters[name]
        return LoRARequest(name, lora_id, path)

    def request(self, prompt: Prompt) -> dict:
        """The request dict vLLM takes: chat-template text, and the frames as uint8
        arrays in placeholder order (runs on the image threads, off the engine's loop)."""
        text = self.processor.apply_chat_template(
            [{"role": "user", "content": prompt.parts}], add_generation_prompt=True, tokenize=False
        )
        out: dict = {"prompt": text}
        if len(prompt.images):
            if self.max_images == 0:
                raise ValueError(f"{len(prompt.images)} images for an engine that takes none "
                                 "(a text-only model, or one built for mode=text)")
            if len(prompt.images) > self.max_images:
                raise ValueError(
                    f"{len(prompt.images)} images in one prompt, more than max_images_per_prompt="
                    f"{self.max_images}; raise it or lower plan.max_keyframes"
                )
            out["multi_modal_data"] = {"image": [frame_array(i) for i in prompt.images]}
        return out


# The ranks vLLM sizes its LoRA slots by (LoRAConfig.max_lora_rank accepts only these).
LORA_SLOT_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def lora_slot_rank(r: int) -> int:
    """The smallest slot rank that holds an adapter of rank r (a rank-4 adapter in a
    rank-8 slot: vLLM pads it)."""
    for slot in LORA_SLOT_RANKS:
        if slot >= r:
            return slot
    raise ValueError(f"LoRA rank {r} is above vLLM's largest ({LORA_SLOT_RANKS[-1]}); train with a smaller "
                     "finetune.lora_rank")


def _lora_rank(path: str) -> int:
    """The rank `r` in a peft adapter's adapter_config.json (vLLM sizes its slots by it)."""
    import json

    import fsspec

    with fsspec.open(path.rstrip("/") + "/adapter_config.json") as f:
        return int(json.load(f).get("r", 16))
