"""The VLM front-end's CPU cost per image, measured: Qwen2.5-VL's image processor (the
transformers one emodist and vLLM call, with Qwen2.5-VL-Instruct's
preprocessor_config.json) on one thread, as vLLM's one preprocessing thread per engine
runs it.

    python benchmarks/frontend_cost.py [--reps 7] [--json out.json]        # main venv
    .venv-vllm/bin/python benchmarks/frontend_cost.py [--reps 5]           # + vLLM's own path

Frames are the decode stage's (already at the model's size, uint8), 224 and 448 px,
handed over as one request's images would be (1 and 4 a call). Milliseconds per image
are the CPU time of the calling thread (median [min-max] of the repetitions): on a
shared machine, wall time counts other processes' turns too. Three tables:
1. the transformers processor, PIL backend (the one the main venv has, without
   torchvision): the figure benchmarks/model_stage.py used to assume (FRONTEND_MS_BEFORE);
2. where the time goes, 4 a call, for every backend installed (PIL; torchvision, which
   vLLM's install brings and transformers then picks): the whole call, without the resize
   (do_resize=False: frames at the processor's target size), without rescale/normalize
   (what vLLM's `mm_device_do_normalize` moves to the GPU for Qwen2-VL-family models),
   and neither (the patchify and conversions left);
3. with vLLM installed: vLLM's own preprocessing call (its renderer's multimodal step, a
   private method: the work its one thread does per request, hashing included), with
   the settings vLLM resolves for Qwen2.5-VL (normalize on the GPU), for frames as PIL
   images (what emodist sent before) and as uint8 arrays (what it sends now). These are
   benchmarks/model_stage.py's FRONTEND_MS_VLLM_PIL and FRONTEND_MS_VLLM_ARRAYS.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIZES = (224, 448)
# Table 2's variants: keyword arguments of the processor call.
VARIANTS = {
    "whole call": {},
    "without resize": {"do_resize": False},
    "without rescale/normalize": {"do_rescale": False, "do_normalize": False},
    "neither (patchify, conversions)": {"do_resize": False, "do_rescale": False, "do_normalize": False},
}


def processor(backend: str = "pil"):
    from emodist.models.tiny import QWEN_PREPROCESSOR

    kwargs = {k: v for k, v in QWEN_PREPROCESSOR.items() if k not in ("image_processor_type", "processor_class")}
    if backend == "pil":
        from transformers import Qwen2VLImageProcessorPil

        return Qwen2VLImageProcessorPil(**kwargs)
    from transformers import Qwen2VLImageProcessor  # the torchvision backend

    return Qwen2VLImageProcessor(**kwargs)


def backends() -> list[str]:
    from transformers.utils import is_torchvision_available

    return ["pil", "torchvision"] if is_torchvision_available() else ["pil"]


def frames(px: int, n: int, seed: int = 0) -> list:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (px, px, 3), dtype=np.uint8) for _ in range(n)]


def _per_image(call, groups: list[list], reps: int) -> dict:
    """Thread CPU milliseconds per image of `call(group)` over all groups, `reps` times."""
    call(groups[0])  # warm-up
    n = sum(len(g) for g in groups)
    ms = []
    for _ in range(reps):
        t0 = time.thread_time()
        for g in groups:
            call(g)
        ms.append((time.thread_time() - t0) / n * 1e3)
    return {"ms_per_image": round(statistics.median(ms), 2), "min": round(min(ms), 2), "max": round(max(ms), 2),
            "reps": reps}


def measure(px: int, per_call: int, reps: int = 7, images: int = 16, backend: str = "pil", **kwargs) -> dict:
    """Milliseconds per image over `reps` passes of `images` frames, `per_call` a call."""
    import torch

    torch.set_num_threads(1)
    proc, fr = processor(backend), frames(px, images)
    out = _per_image(lambda g: proc(images=g, return_tensors="pt", **kwargs),
                     [fr[k:k + per_call] for k in range(0, images, per_call)], reps)
    return {"px": px, "per_call": per_call, "backend": backend, **out}


def breakdown(reps: int) -> list[dict]:
    return [dict(measure(px, 4, reps, backend=b, **kw), variant=name)
            for b in backends() for px in SIZES for name, kw in VARIANTS.items()]


def vllm_renderer(px: int):
    """vLLM's renderer for the tiny Qwen2.5-VL (Qwen2.5-VL's real processor config), as
    emodist's engine configures it, without starting an engine."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.renderers.registry import renderer_from_config

    from emodist.models.tiny import ensure_tiny_qwen
    from emodist.models.vllm_engine import qwen_pixel_bounds

    cfg = AsyncEngineArgs(model=str(ensure_tiny_qwen()), dtype="float32", enforce_eager=True,
                          limit_mm_per_prompt={"image": 4, "video": 0}, mm_processor_kwargs=qwen_pixel_bounds(px, px),
                          kv_cache_memory_bytes=1 << 30).create_engine_config()
    return renderer_from_config(cfg), cfg


def vllm_path(reps: int) -> list[dict]:
    """vLLM's own preprocessing per image (4 frames a request, new frames every call, so
    its processor cache never answers), frames as PIL images and as uint8 arrays."""
    import torch
    from PIL import Image

    torch.set_num_threads(1)
    renderer, cfg = vllm_renderer(max(SIZES))
    tok = renderer.tokenizer
    ids = tok.encode("<|vision_start|><|image_pad|><|vision_end|>" * 4 + "Which emotion?")
    from emodist.models.vllm_engine import qwen_pixel_bounds

    out = []
    device_norm = bool(cfg.model_config.multimodal_config.mm_device_do_normalize)
    for px in SIZES:
        kwargs = qwen_pixel_bounds(px, px)
        for kind in ("pil", "arrays"):
            seed = iter(range(10**6))

            def call(_, kind=kind, px=px, kwargs=kwargs):
                fr = frames(px, 4, next(seed))
                data = [Image.fromarray(f) for f in fr] if kind == "pil" else fr
                t0 = time.thread_time()
                renderer._process_multimodal(ids, {"image": data}, None, kwargs, skip_mm_cache=True)
                return time.thread_time() - t0

            call(None)  # warm-up
            ms = [call(None) / 4 * 1e3 for _ in range(reps * 2)]  # frame making not counted
            out.append({"px": px, "per_call": 4, "input": kind, "device_normalize": device_norm,
                        "ms_per_image": round(statistics.median(ms), 2), "min": round(min(ms), 2),
                        "max": round(max(ms), 2), "reps": reps * 2})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    result: dict = {"unit": "thread CPU ms per image"}
    rows = result["pil_backend"] = [measure(px, n, args.reps) for px in SIZES for n in (1, 4)]
    print("1. Qwen2.5-VL image processor (transformers, PIL backend), one thread, CPU ms per image "
          "(median [min-max]):")
    for r in rows:
        print(f"  {r['px']} px, {r['per_call']} a call: {r['ms_per_image']:.2f} [{r['min']:.2f}-{r['max']:.2f}]")
    rows = result["breakdown"] = breakdown(args.reps)
    print("2. Where it goes (4 frames a call, frames at the processor's target size):")
    for r in rows:
        print(f"  {r['backend']:11s} {r['px']} px, {r['variant']:32s} {r['ms_per_image']:.2f} "
              f"[{r['min']:.2f}-{r['max']:.2f}]")
    try:
        import vllm  # noqa: F401
    except ImportError:
        print("3. vLLM's own path: not measured (vllm is not installed here; run with .venv-vllm/bin/python)")
    else:
        rows = result["vllm"] = vllm_path(args.reps)
        print("3. vLLM's own preprocessing (its renderer's one thread; 4 frames a request; "
              f"normalize on the GPU: {rows[0]['device_normalize']}):")
        for r in rows:
            print(f"  {r['px']} px, frames as {r['input']:6s}: {r['ms_per_image']:.2f} [{r['min']:.2f}-{r['max']:.2f}]")
        for px in SIZES:
            pil, arr = (next(r for r in rows if r["px"] == px and r["input"] == k) for k in ("pil", "arrays"))
            before = next(r for r in result["pil_backend"] if r["px"] == px and r["per_call"] == 4)
            print(f"  {px} px: transformers' PIL backend {before['ms_per_image']:.2f} (the old assumption) -> vLLM, "
                  f"PIL images {pil['ms_per_image']:.2f} -> vLLM, arrays {arr['ms_per_image']:.2f} ms per image")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
