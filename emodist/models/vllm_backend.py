"""The vLLM backend: the offline engine (`vllm.LLM`), created inside the stage's actor.

It mirrors the transformers backend (hf.py): the same prompts (prompts.py's content
parts rendered by the model's own HF chat template, so both backends send the same
text), the same option scoring (PermutationScorer) and the same outputs.

Option scoring needs the log-probability of every option letter at the next token, a
full distribution over the labels, while vLLM returns only top-k log-probs by default.
Two ways, chosen by what the installed vLLM offers:
- `SamplingParams(logprob_token_ids=<letter ids>)` (in vLLM 0.28+): the log-probs of
  exactly these tokens, taken from the engine's `raw_logprobs` (the full-vocabulary
  log-softmax before any logits processor). These are the numbers hf.py reads from
  `log_softmax(logits)[letter ids]`, so the two backends agree to float precision.
- older vLLM: `allowed_token_ids=<letter ids>`, `logprobs=len(ids)` and the engine's
  `logprobs_mode="processed_logprobs"`: the log-softmax after the allowed-token mask,
  i.e. over the letters only. Every letter is then in the top len(ids), and the values
  differ from the raw ones by one constant per prompt, which the scorer's
  renormalisation over the options cancels.
The one sampled token is constrained to the letters and not read: as in hf.py, the
answer is the top letter, so no model text can break the scoring.
Not chosen: top-k raw log-probs with k >= vocab size (150k dicts per prompt on real
models) and prompt_logprobs on appended letters (one prompt per option).

Failure policy: an empty or odd generation is recorded as text, never raised; an engine
error raises, so the stage retries the batch clip by clip and isolates the bad clip.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from emodist.config import DescriberConfig, LabelerConfig, Mode, ModelConfig
from emodist.models import prompts
from emodist.models.base import ClipInput, Gap, LabelResult
from emodist.models.hf import clean_description, resolve_model
from emodist.models.scoring import PermutationScorer

# KV cache of a CPU engine unless VLLM_CPU_KVCACHE_SPACE (GiB) says otherwise: vLLM's
# CPU default is a share of all RAM, which several actors on one machine cannot all take.
CPU_KV_CACHE_BYTES = 1 << 30
# More than any label set's letters in their two spellings ('A', ' A').
MAX_LOGPROBS = 2 * len(prompts.LETTERS)


def _supports_logprob_token_ids() -> bool:
    from vllm import SamplingParams

    try:
        SamplingParams(max_tokens=1, logprob_token_ids=[0])
    except TypeError:
        return False
    return True


def _platform(device: str) -> str:
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
    if want == "cuda" and ":" in device and "CUDA_VISIBLE_DEVICES" not in os.environ:
        # Outside Ray (which sets CUDA_VISIBLE_DEVICES for its actors), pick the GPU.
        os.environ["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
    return kind


class VLLMEngine:
    """One `vllm.LLM`; generation and option scoring over chat prompts (like HFVLM)."""

    def __init__(self, cfg: ModelConfig, *, seed: int = 0, images: bool = True):
        from transformers import AutoProcessor
        from vllm import LLM

        self.model_id = cfg.model
        path = resolve_model(cfg.model)
        self.platform = _platform(cfg.device)
        dtype = cfg.dtype
        if dtype == "auto":  # as hf.py: bfloat16 on GPU, float32 on CPU
            dtype = "bfloat16" if self.platform == "cuda" else "float32"
        # The HF processor renders the chat template exactly as hf.py does.
        self.processor = AutoProcessor.from_pretrained(path)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        multimodal = hasattr(self.processor, "image_processor")  # text-only: a bare tokenizer
        if multimodal and self.platform == "cpu":
            try:  # vLLM inspects vision models with torchvision; vllm-cpu's does not load
                import torchvision  # noqa: F401
            except Exception as exc:  # noqa: BLE001 - ImportError or a broken build
                raise RuntimeError(
                    f"{cfg.model}: vLLM's CPU build cannot run vision models (torchvision does not "
                    "load here); use backend=transformers, or the official vllm on a GPU"
                ) from exc
        self.max_images = cfg.max_images_per_prompt if images and multimodal else 0
        self.token_ids_api = _supports_logprob_token_ids()
        kwargs: dict = dict(
            model=path, dtype=dtype, seed=seed,
            tensor_parallel_size=cfg.tensor_parallel_size,
            enable_prefix_caching=cfg.enable_prefix_caching,
            max_logprobs=MAX_LOGPROBS,
            logprobs_mode="raw_logprobs" if self.token_ids_api else "processed_logprobs",
        )
        if multimodal:  # older vLLM refuses the limits for text-only models
            # Frames go in as images, never as video; 0 of everything (text mode) lets
            # vLLM skip the vision tower.
            kwargs["limit_mm_per_prompt"] = {"image": self.max_images}
            if hasattr(self.processor, "video_processor"):
                kwargs["limit_mm_per_prompt"]["video"] = 0
        if cfg.max_model_len is not None:
            kwargs["max_model_len"] = cfg.max_model_len
        if self.platform == "cuda":
            kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        else:
            kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
            # torch.compile warm-up takes ~30 s per engine on a small CPU; the CPU build
            # serves tests and small runs, where start-up dominates.
            kwargs["enforce_eager"] = True
        self.llm = LLM(**kwargs)
        # hf.py's greedy generate() applies the model's generation_config, of which only
        # repetition_penalty changes a greedy answer (Qwen2.5-VL ships 1.05); so here too.
        defaults = self.llm.get_default_sampling_params()
        self.repetition_penalty = float(getattr(defaults, "repetition_penalty", None) or 1.0)

    def _prompts(self, parts: Sequence[list[prompts.Part]], images: Sequence[Sequence[np.ndarray]]) -> list[dict]:
        from PIL import Image

        out = []
        for p, imgs in zip(parts, images, strict=True):
            text = self.processor.apply_chat_template(
                [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
            )
            prompt: dict = {"prompt": text}
            if len(imgs):
                if self.max_images == 0:
                    raise ValueError(f"{len(imgs)} images for an engine that takes none "
                                     "(a text-only model, or one built for mode=text)")
                if len(imgs) > self.max_images:
                    raise ValueError(
                        f"{len(imgs)} images in one prompt, more than max_images_per_prompt="
                        f"{self.max_images}; raise it or lower plan.max_keyframes"
                    )
                prompt["multi_modal_data"] = {"image": [Image.fromarray(np.asarray(i)) for i in imgs]}
            out.append(prompt)
        return out

    def generate(self, parts, images, max_new_tokens: int) -> list[str]:
        """Greedy continuations, one per prompt; '' where the model produced nothing."""
        from vllm import SamplingParams

        if not parts:
            return []
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens,
                                repetition_penalty=self.repetition_penalty)
        outs = self.llm.generate(self._prompts(parts, images), params, use_tqdm=False)
        return [(o.outputs[0].text or "") if o.outputs else "" for o in outs]

    def token_logprobs(self, parts, images, token_ids: Sequence[int]) -> np.ndarray:
        """(B, len(token_ids)) next-token log-probabilities of `token_ids` after each
        prompt: full-vocabulary log-softmax values, or (older vLLM) values over
        `token_ids` only, which differ from those by one constant per row."""
        from vllm import SamplingParams

        ids = [int(t) for t in token_ids]
        if not parts:
            return np.zeros((0, len(ids)))
        if self.token_ids_api:
            params = SamplingParams(temperature=0.0, max_tokens=1, logprob_token_ids=ids, allowed_token_ids=ids)
        else:
            params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=len(ids), allowed_token_ids=ids)
        outs = self.llm.generate(self._prompts(parts, images), params, use_tqdm=False)
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


class VLLMDescriber:
    def __init__(self, cfg: DescriberConfig, *, engine: VLLMEngine | None = None):
        self.cfg = cfg
        self.engine = engine or VLLMEngine(cfg)
        self.model_id = cfg.model

    def describe(self, gaps: Sequence[Gap]) -> list[str]:
        parts, images = prompts.describe_requests(gaps, self.cfg.prompt)
        return [clean_description(t) for t in self.engine.generate(parts, images, self.cfg.max_new_tokens)]


class VLLMLabeler:
    wants_all_frames = False

    def __init__(self, cfg: LabelerConfig, mode: Mode, labels: Sequence[str], seed: int = 0,
                 *, engine: VLLMEngine | None = None):
        self.cfg, self.mode = cfg, mode
        self.engine = engine or VLLMEngine(cfg, seed=seed, images=mode != "text")
        self.model_id = cfg.model
        self.scorer = PermutationScorer(self.engine.tokenizer, labels, cfg.permutations, seed)
        self._ids = sorted({i for group in self.scorer.letter_ids for i in group})

    def score(self, clips: Sequence[ClipInput], labels: Sequence[str]) -> list[LabelResult]:
        parts, images = prompts.label_requests(clips, self.scorer.option_orders, self.mode, self.cfg.prompt)
        compact = self.engine.token_logprobs(parts, images, self._ids)
        # Back to token-id columns (up to the largest letter id) for the shared scorer.
        vocab = np.full((len(parts), self._ids[-1] + 1), -np.inf)
        vocab[:, self._ids] = compact
        return self.scorer.results(self.scorer.letter_logprobs(vocab), [c.clip_id for c in clips])
