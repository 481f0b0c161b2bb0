"""CPU (PyAV) against GPU (NVDEC via torchcodec) decoding of the same H.264 clips, by
emodist's decode path with the default MSCE plan, at 224x224 and 1280x720 sources.

    python benchmarks/bench_gpu_decode.py [--clips 16] [--out benchmarks/results/gpu_decode.json]

Prints clips/s and frames/s for each device and the GPU/CPU ratio, and checks that the
frames agree (mean absolute difference). Needs a CUDA GPU and torchcodec."""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def make_clips(out: Path, n: int, width: int, height: int, seconds: float = 3.0) -> list[str]:
    import av

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = out / f"c{width}x{height}_{i:03d}.mp4"
        with av.open(str(p), "w") as c:
            s = c.add_stream("libx264", rate=25)
            s.width, s.height, s.pix_fmt = width, height, "yuv420p"
            base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            for k in range(int(seconds * 25)):
                img = np.roll(base, k * 3, axis=1)
                for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    c.mux(pkt)
            for pkt in s.encode():
                c.mux(pkt)
        paths.append(str(p))
    return paths


def time_stage(cfg, uris: list[str], reps: int = 3) -> tuple[float, int, dict]:
    from emodist import schema as col
    from emodist.stages.decode import DecodeStage

    stage = DecodeStage(cfg)
    batch = {col.CLIP_ID: np.array(uris, dtype=object), col.URI: np.array(uris, dtype=object)}
    stage(dict(batch))  # warm-up (CUDA context, decoder creation)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = stage(dict(batch))
        times.append(time.perf_counter() - t0)
    frames = sum(len(f) for f in out[col.FRAMES])
    return statistics.median(times), frames, out


def main() -> None:
    from emodist import schema as col
    from emodist.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--out", default="benchmarks/results/gpu_decode.json")
    args = ap.parse_args()
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for w, h in ((224, 224), (1280, 720)):
            uris = make_clips(Path(tmp), args.clips, w, h)
            cpu_t, nf, cpu_out = time_stage(load_config(None, ["decode.device=cpu"]), uris)
            gpu_t, _, gpu_out = time_stage(load_config(None, ["decode.device=cuda"]), uris)
            diff = float(np.mean([np.abs(a.astype(int) - b.astype(int)).mean()
                                  for a, b in zip(cpu_out[col.FRAMES], gpu_out[col.FRAMES])]))
            rows.append({"source": f"{w}x{h}", "clips": len(uris), "frames": nf,
                         "cpu_clips_per_s": len(uris) / cpu_t, "gpu_clips_per_s": len(uris) / gpu_t,
                         "cpu_frames_per_s": nf / cpu_t, "gpu_frames_per_s": nf / gpu_t,
                         "gpu_over_cpu": cpu_t / gpu_t, "mean_abs_diff": diff,
                         "devices": sorted(set(gpu_out[col.DECODE_DEVICE]))})
    print(f"GPU: {torch.cuda.get_device_name()}")
    print(f"{'source':>10} {'cpu clips/s':>12} {'gpu clips/s':>12} {'gpu/cpu':>8} {'cpu fps':>9} {'gpu fps':>9} {'|diff|':>7}")
    for r in rows:
        print(f"{r['source']:>10} {r['cpu_clips_per_s']:12.1f} {r['gpu_clips_per_s']:12.1f} {r['gpu_over_cpu']:8.2f} "
              f"{r['cpu_frames_per_s']:9.0f} {r['gpu_frames_per_s']:9.0f} {r['mean_abs_diff']:7.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"gpu": torch.cuda.get_device_name(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
