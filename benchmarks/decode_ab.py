"""Decode A/B across a change: today's decoder against the same code at an earlier commit
(a git worktree of it), on the same clips, in fresh processes, repetitions interleaved.

    python -m benchmarks --sections decode         # adds an A/B row per clip set
    python benchmarks/decode_ab.py --before REV    # alone: prints clips/s per side and the ratio

Each side times `decode_clip` (the CPU decoder with the temporal plan, default config)
over every clip of a set, in its own interpreter with its own emodist first on the path.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "RESULT "
# The parent of the input-layer restructuring (emodist/io, emodist/decoders).
BEFORE_COMMIT = "31c2606"


def _time_side(folder: str) -> float:
    """Seconds to decode every clip in `folder` once, after one warm-up clip."""
    try:  # after the restructuring
        from emodist.decoders.pyav import decode_clip
    except ImportError:  # before it
        from emodist.stages.decode import decode_clip
    from emodist.config import load_config

    cfg = load_config(None, [])
    clips = sorted(str(p) for p in Path(folder).glob("*.mp4"))
    decode_clip(clips[0], cfg)
    t0 = time.perf_counter()
    for c in clips:
        decode_clip(c, cfg)
    return time.perf_counter() - t0


def worktree(rev: str) -> Path | None:
    path = Path.home() / ".cache" / "emodist" / f"before-{rev}"
    if (path / "emodist").exists():
        return path
    res = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev],
                         capture_output=True, text=True)
    return path if res.returncode == 0 else None


def side(folder: Path, tree: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "decode_ab.py"), "--side", str(folder)],
                         capture_output=True, text=True, env=env, cwd=str(tree), check=True)
    return float(next(ln for ln in out.stdout.splitlines() if ln.startswith(MARK))[len(MARK):])


def ab(folder: Path, before: Path, reps: int) -> dict:
    n = len(list(folder.glob("*.mp4")))
    times = {"before": [], "after": []}
    for _ in range(reps):
        times["before"].append(side(folder, before))
        times["after"].append(side(folder, ROOT))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"clips": n, "before_clips_per_s": n / med["before"], "after_clips_per_s": n / med["after"],
            "ratio": med["before"] / med["after"], "wall_s": times}


def run(res, sets: dict[str, Path], reps: int) -> None:
    """The section's A/B rows: one per clip set."""
    from benchmarks.common import Ratio, Row, log

    before = worktree(BEFORE_COMMIT)
    if before is None:
        res.notes.append(f"decode A/B: no worktree of {BEFORE_COMMIT} (no git history): not run")
        return
    for name, folder in sets.items():
        log(f"decode A/B: {name}")
        out = ab(Path(folder), before, reps)
        res.rows.append(Row("decode", name, f"decode_clip before the input-layer change ({BEFORE_COMMIT})",
                            out["clips"], out["before_clips_per_s"], reps=reps, extra=out))
        res.rows.append(Row("decode", name, "decode_clip after it (emodist.decoders)", out["clips"],
                            out["after_clips_per_s"], reps=reps, extra=out))
        res.ratios.append(Ratio(f"[{name}] decode after / before the input-layer change", out["ratio"],
                                ">= 0.97 (not lower, within noise)", out["ratio"] >= 0.97,
                                "fresh processes, interleaved repetitions, medians"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", help="(internal) time one side on this folder")
    ap.add_argument("--before", default=BEFORE_COMMIT)
    ap.add_argument("--folder", help="clip folder (default: the benchmark's syn224 set)")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    if args.side:
        print(MARK + repr(_time_side(args.side)))
        return 0
    tree = worktree(args.before)
    if tree is None:
        print(f"cannot make a worktree of {args.before}", file=sys.stderr)
        return 1
    if args.folder:
        folder = Path(args.folder)
    else:
        sys.path.insert(0, str(ROOT))
        from benchmarks import clips

        folder = clips.syn224(32)
    print(json.dumps(ab(folder, tree, args.reps), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
