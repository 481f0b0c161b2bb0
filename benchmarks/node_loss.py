"""What a node lost mid-run costs `emodist run`: wall time with and without the loss, and
the rows whose stage work was done again.

    python benchmarks/node_loss.py [--clips 300] [--reps 1]

On this machine: a head with no CPUs (the driver) and two 2-CPU worker nodes started with
`ray start` on 127.0.0.1 (tests/ray_heads.py's LocalCluster, as tests/test_nodes.py),
fresh for each run. The tiny VLM labels synthetic clips (msce, 3 label orders). With a
loss, the worker node holding the most stage actors is killed (SIGKILL to its process
group) once a third of the clips are committed; the other node finishes the run. Runs
alternate (no loss, loss) so that a busy spell of a shared machine hits both. Each run
is checked for exactly one row per clip.

The nodes share this machine's cores, so the lost node takes no compute away: what the
loss costs here is the work redone (retried batches, restarted actors reloading the
model) and the time to notice the node is gone, not the capacity a real node brings.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.ray_heads import BIN, LocalCluster, cluster_env  # noqa: E402 - the repo root first

SETS = ["mode=msce", "labeler.permutations=3", "decode.width=64", "decode.height=64", "decode.batch_size=2",
        "labeler.batch_size=2", "run.part_rows=4", "run.max_nodes=null", "decode.actors=2", "labeler.actors=2"]


def _committed(out: Path) -> int:
    """Clips committed so far, about (run.part_rows a part)."""
    return 4 * sum(len(list((out / sub).glob("part-*.parquet"))) for sub in ("predictions", "failures")
                   if (out / sub).exists())


def _rows(out: Path) -> dict[str, int]:
    import pyarrow.dataset as pads

    seen: dict[str, int] = {}
    for sub in ("predictions", "failures"):
        if (out / sub).exists() and any((out / sub).glob("part-*.parquet")):
            for cid in pads.dataset(out / sub).to_table(columns=["clip_id"]).column(0).to_pylist():
                seen[cid] = seen.get(cid, 0) + 1
    return seen


def one_run(tmp: Path, env: dict, clips: Path, n: int, lose: bool) -> dict:
    cluster = LocalCluster(tmp, env)
    try:
        cluster.head()
        cluster.node("w1", 2)
        cluster.node("w2", 2)
        out = tmp / "out"
        sets = [a for s in [*SETS, f"run.ray_address={cluster.address}"] for a in ("--set", s)]
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(BIN / "emodist"), "run", "-i", str(clips / "manifest.csv"), "-o", str(out),
                                 "--config", "configs/tiny-vlm.yaml", "--quiet", *sets], cwd=ROOT, env=env,
                                stdout=(tmp / "run.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        killed_at = None
        try:
            if lose:
                while _committed(out) < n // 3:
                    if proc.poll() is not None:
                        raise RuntimeError("the run ended before the kill: " + (tmp / "run.log").read_text()[-2000:])
                    time.sleep(0.2)
                cluster.kill(max(("w1", "w2"), key=cluster.actors_on))
                killed_at = time.perf_counter() - t0
            proc.wait(timeout=900)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError("the run failed: " + (tmp / "run.log").read_text()[-2000:])
        rows = _rows(out)
        if len(rows) != n or any(c != 1 for c in rows.values()):
            raise RuntimeError(f"{len(rows)} clips with rows of {n}, {sum(c > 1 for c in rows.values())} doubled")
        s = json.loads((out / "summary.json").read_text())
        return {"lose": lose, "wall_s": round(wall, 1), "killed_at_s": killed_at and round(killed_at, 1),
                "nodes_lost": len(s.get("nodes_lost") or []), "actor_restarts": s.get("actor_restarts", 0),
                "batches_retried": s.get("batches_retried") or {}, "rows_retried": s.get("rows_retried", 0),
                "labeled": s["labeled"], "failed": s["failed"]}
    finally:
        cluster.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=300)
    ap.add_argument("--reps", type=int, default=1, help="pairs of runs (no loss, loss)")
    args = ap.parse_args(argv)
    from emodist.synth import synthesize

    with tempfile.TemporaryDirectory(prefix="emodist-node-loss-") as tmp:
        tmp = Path(tmp)
        cache = Path(os.environ.get("EMODIST_CACHE") or tmp / "cache")
        env = cluster_env(cache)
        os.environ["EMODIST_CACHE"] = str(cache)  # this script's own process: the tiny VLM built once
        clips = synthesize(tmp / "clips", args.clips, seed=3, size=64, min_s=1.0, max_s=1.5).parent
        results = []
        for rep in range(args.reps):
            for lose in (False, True):
                run_dir = tmp / f"run-{rep}-{int(lose)}"
                run_dir.mkdir()
                results.append(one_run(run_dir, env, clips, args.clips, lose))
                print(json.dumps(results[-1]), flush=True)
    for lose in (False, True):
        walls = [r["wall_s"] for r in results if r["lose"] == lose]
        retried = [r["rows_retried"] for r in results if r["lose"] == lose]
        print(f"{args.clips} clips, {'one node lost' if lose else 'no node lost'}: wall {statistics.median(walls):.1f} s "
              f"(runs: {walls}), rows retried {retried}, one row per clip in every run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
