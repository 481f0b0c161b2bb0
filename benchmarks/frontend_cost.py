"""The VLM front-end's CPU cost per image, measured: Qwen2.5-VL's image processor (the
transformers one emodist and vLLM call, with Qwen2.5-VL-Instruct's
preprocessor_config.json) on one thread, as vLLM's one preprocessing thread per engine
runs it.

    python benchmarks/frontend_cost.py [--reps 7] [--json out.json]

Frames are the decode stage's (already at the model's size, uint8), 224 and 448 px,
handed over as one request's images would be (1 and 4 a call). Prints the median
milliseconds per image (the spread: min and max of the repetitions). The PIL backend is
measured (no torchvision here); vLLM on a GPU node has torchvision and may use the
torchvision backend, which is not measured. benchmarks/model_stage.py's front-end
assumption (FRONTEND_MS_PER_IMAGE) is this script's 448 px, 4-a-call median.
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


def processor():
    from transformers import Qwen2VLImageProcessorPil

    from emodist.models.tiny import QWEN_PREPROCESSOR

    return Qwen2VLImageProcessorPil(**{k: v for k, v in QWEN_PREPROCESSOR.items()
                                       if k not in ("image_processor_type", "processor_class")})


def measure(px: int, per_call: int, reps: int = 7, images: int = 16) -> dict:
    """Milliseconds per image over `reps` passes of `images` frames, `per_call` a call."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    proc = processor()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (px, px, 3), dtype=np.uint8) for _ in range(images)]
    proc(images=frames[:per_call], return_tensors="pt")  # warm-up
    ms = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for k in range(0, images, per_call):
            proc(images=frames[k:k + per_call], return_tensors="pt")
        ms.append((time.perf_counter() - t0) / images * 1e3)
    return {"px": px, "per_call": per_call, "ms_per_image": round(statistics.median(ms), 2),
            "min": round(min(ms), 2), "max": round(max(ms), 2), "reps": reps}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows = [measure(px, n, args.reps) for px in (224, 448) for n in (1, 4)]
    print("Qwen2.5-VL image processor (transformers, PIL backend), one thread, ms per image (median [min-max]):")
    for r in rows:
        print(f"  {r['px']} px, {r['per_call']} a call: {r['ms_per_image']:.2f} [{r['min']:.2f}-{r['max']:.2f}]")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
