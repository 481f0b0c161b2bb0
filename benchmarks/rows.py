"""The row path at scale: rows that need no model work, and a resume that skips them.

    python -m benchmarks --sections rows            # 100k and 1M rows after, 100k before
    python benchmarks/rows.py --rows 100000 --big 1000000 --before-rows 100000
    python benchmarks/rows.py --rows 1000000 --big 2000000 --before-rows 0   # resume at 1M, 2M; MODELLED to 10M

A manifest whose files are all missing runs to one failure row per line with no decoding
and no model work, so its rate is the cost of the row path alone (listing, the stages'
batches, the driver's commit). A rerun into the same output skips every clip (resume).
Each case runs `pipeline.run` with the default config on a fresh local Ray, in a fresh
interpreter (its own driver peak RSS, from getrusage), on today's code and on a git
worktree of the commit before the row-path change (`BEFORE_COMMIT`), one after the other.
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

ROOT = Path(__file__).resolve().parents[1]
MARK = "RESULT "
# The parent of the exactly-once and row-path change.
BEFORE_COMMIT = "5e82119"
TARGET_ROWS_PER_S, TARGET_SKIPS_PER_S, TARGET_RSS_GROWTH = 4000, 20_000, 0.10


def missing_manifest(path: Path, n: int) -> Path:
    """A CSV manifest of `n` clips whose files do not exist (absolute paths, none on disk)."""
    if not path.exists():
        with open(path, "w") as f:
            f.write("uri,label\n")
            f.writelines(f"/nonexistent-emodist-bench/set{i % 97}/clip_{i:08d}.mp4,happy\n" for i in range(n))
    return path


def _side(manifest: str, out: str) -> dict:
    """One run into `out` (a fresh output, or a rerun that resumes), in this interpreter."""
    import resource

    from emodist import pipeline
    from emodist.config import load_config

    import threading

    # RSS counts the object store's shared pages the driver has read (RssShmem: every
    # page of a block it read stays counted while Ray maps the store); RssAnon (Linux) is
    # the driver's own heap.
    peak_anon, peak_shmem, done = [0], [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.25):
            with open("/proc/self/status") as f:
                kib = {ln.split(":")[0]: int(ln.split()[1]) for ln in f if ln.startswith(("RssAnon:", "RssShmem:"))}
            peak_anon[0] = max(peak_anon[0], kib.get("RssAnon", 0) * 1024)
            peak_shmem[0] = max(peak_shmem[0], kib.get("RssShmem", 0) * 1024)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cfg = load_config(None, ["run.num_cpus=2"])
    t0 = time.perf_counter()
    s = pipeline.run(cfg, manifest, out, progress=False)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    busy = getattr(s, "stage_seconds", {}) or {}
    return {"wall_s": wall, "labeled": s.labeled, "failed": s.failed, "skipped": s.skipped_done,
            "stage_busy_s": round(sum(busy.values()), 3), "stage_seconds": busy,
            "driver_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "driver_peak_anon_mib": peak_anon[0] / 2**20, "driver_peak_shmem_mib": peak_shmem[0] / 2**20}


def side(tree: Path, manifest: Path, out: Path, in_process: bool = False) -> dict:
    """One run in a fresh interpreter of `tree`'s code; `in_process`: in this one, on the
    Ray already started (the smoke run: seconds, not a fresh Ray per run; its figures mean nothing)."""
    if in_process:
        return _side(str(manifest), str(out))
    env = dict(os.environ, PYTHONPATH=str(tree), RAY_DEDUP_LOGS="1")
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rows.py"), "--side", str(manifest), str(out)],
                         capture_output=True, text=True, env=env, cwd=str(tree))
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith(MARK)), None)
    if line is None:
        raise RuntimeError(f"rows side in {tree} failed (exit {res.returncode}): {res.stderr[-800:]}")
    return json.loads(line[len(MARK):])


def measure(tree: Path, manifest: Path, work: Path, label: str, fixed: dict, in_process: bool = False) -> dict:
    """A fresh run, then a rerun that skips every clip. `fixed`: a one-clip run and its
    rerun on the same side (Ray's start, the actor pools, the model load): the marginal
    rates are the rows beyond it over the seconds beyond it."""
    out = work / f"out-{label}"
    first = side(tree, manifest, out, in_process)
    again = side(tree, manifest, out, in_process)
    n = first["failed"] + first["labeled"]
    return {"rows": n, "rows_per_s": n / first["wall_s"], "skips_per_s": again["skipped"] / again["wall_s"],
            "marginal_rows_per_s": _beyond(n - 1, first["wall_s"], fixed["first"]["wall_s"]),
            "marginal_skips_per_s": _beyond(again["skipped"] - 1, again["wall_s"], fixed["resume"]["wall_s"]),
            "fixed_s": fixed["first"]["wall_s"], "fixed_resume_s": fixed["resume"]["wall_s"],
            "wall_over_busy": first["wall_s"] / first["stage_busy_s"] if first["stage_busy_s"] else None,
            "first": first, "resume": again}


def _beyond(n: int, wall: float, fixed: float) -> float:
    """n over the seconds beyond the one-clip run; NaN when start-up noise swallows them
    (the one-clip run took as long: the case is too small to tell)."""
    return n / (wall - fixed) if wall - fixed > 1.0 else float("nan")


def _fixed(tree: Path, work: Path, label: str, in_process: bool = False) -> dict:
    out = work / f"out-{label}-one"
    manifest = missing_manifest(work / "m1.csv", 1)
    return {"first": side(tree, manifest, out, in_process), "resume": side(tree, manifest, out, in_process)}


def cases(work: Path, rows: int, big: int, before_rows: int, in_process: bool = False) -> dict:
    from benchmarks.decode_ab import worktree

    out = {}
    before = worktree(BEFORE_COMMIT) if before_rows else None  # --before-rows 0: no worktree at all
    fixed = _fixed(ROOT, work, "after", in_process)
    for n in (rows, big):
        out[f"after {n:,}"] = measure(ROOT, missing_manifest(work / f"m{n}.csv", n), work, f"after{n}", fixed,
                                      in_process)
    if before is not None and before_rows:
        fixed = _fixed(before, work, "before")
        out[f"before {before_rows:,}"] = measure(before, missing_manifest(work / f"m{before_rows}.csv", before_rows),
                                                 work, f"before{before_rows}", fixed)
    return out


def run(res, quick: bool = False, smoke: bool = False) -> None:
    """The section's rows and ratios. `smoke`: 20 and 40 rows, no before side, every run
    in this process on its Ray (the test suite's smoke run)."""
    from benchmarks.common import Ratio, Row, log

    rows, big, before_rows = ((20, 40, 0) if smoke else (20_000, 200_000, 20_000) if quick
                              else (100_000, 1_000_000, 100_000))
    log(f"rows: {rows:,} and {big:,} missing files after, {before_rows:,} before ({BEFORE_COMMIT})")
    with tempfile.TemporaryDirectory(prefix="emodist-rows-") as tmp:
        found = cases(Path(tmp), rows, big, before_rows, in_process=smoke)
    for name, m in found.items():
        res.rows.append(Row("rows", "missing files", f"{name}: failure rows (whole run)", m["rows"], m["rows_per_s"],
                            note=f"marginal {m['marginal_rows_per_s']:,.0f} rows/s beyond a {m['fixed_s']:.1f} s "
                                 f"one-clip run; wall/stage-busy {m['wall_over_busy'] or float('nan'):.1f}; "
                                 f"driver peak {m['first']['driver_peak_rss_mib']:.0f} MiB", extra=m))
        res.rows.append(Row("rows", "missing files", f"{name}: resume skips (whole run)", m["resume"]["skipped"],
                            m["skips_per_s"], note=f"marginal {m['marginal_skips_per_s']:,.0f} skips/s; "
                                                   f"driver peak {m['resume']['driver_peak_rss_mib']:.0f} MiB"))
    small, large = found[f"after {rows:,}"], found[f"after {big:,}"]
    for m, n in ((small, rows), (large, big)):
        res.ratios.append(Ratio(f"row path rows/s beyond start-up ({n:,} missing files)", m["marginal_rows_per_s"],
                                f">= {TARGET_ROWS_PER_S}", m["marginal_rows_per_s"] >= TARGET_ROWS_PER_S if m["marginal_rows_per_s"] == m["marginal_rows_per_s"] else None,
                                f"whole run {m['rows_per_s']:,.0f} rows/s incl. {m['fixed_s']:.1f} s start-up"))
        res.ratios.append(Ratio(f"resume skipped clips/s beyond start-up ({n:,})", m["marginal_skips_per_s"],
                                f">= {TARGET_SKIPS_PER_S}", m["marginal_skips_per_s"] >= TARGET_SKIPS_PER_S if m["marginal_skips_per_s"] == m["marginal_skips_per_s"] else None,
                                f"whole run {m['skips_per_s']:,.0f}/s"))
    for kind in ("rss", "anon"):
        growth = large["first"][f"driver_peak_{kind}_mib"] / small["first"][f"driver_peak_{kind}_mib"] - 1
        res.ratios.append(Ratio(f"driver peak {kind.upper()} growth {rows:,} -> {big:,} rows", growth,
                                f"<= {TARGET_RSS_GROWTH}", growth <= TARGET_RSS_GROWTH,
                                "RSS includes the object store's shared pages the driver read" if kind == "rss"
                                else "RssAnon: the driver's own heap"))
    whole = large["skips_per_s"]
    res.ratios.append(Ratio(f"resume skipped clips/s, whole run incl. start-up ({big:,})", whole,
                            f">= {TARGET_SKIPS_PER_S}" if big >= 1_000_000 else "",
                            whole >= TARGET_SKIPS_PER_S if big >= 1_000_000 else None,
                            "the target holds at 1,000,000 clips and more; smaller runs are bound by start-up"))
    for ratio in scale_model(small, rows, large, big):
        res.ratios.append(ratio)
    for line in SCALE_ASSUMPTIONS:
        res.notes.append(f"rows, MODELLED resume beyond {big:,}: {line}")
    before = found.get(f"before {before_rows:,}")
    if before:
        res.ratios.append(Ratio(f"row path rows/s after / before ({BEFORE_COMMIT}), whole runs",
                                small["rows_per_s"] / before["rows_per_s"], "", None,
                                f"{before_rows:,} rows before, {rows:,} after"))
        res.ratios.append(Ratio(f"resume skips/s after / before ({BEFORE_COMMIT}), whole runs",
                                small["skips_per_s"] / before["skips_per_s"], "", None))


SCALE_TO = (5_000_000, 10_000_000)
SCALE_ASSUMPTIONS = (
    "a resume's wall time is its start-up plus a time per clip, both taken from the two largest sizes measured "
    "(the line through them);",
    "per clip: a read task lists its manifest's byte range, keys each clip and looks it up in the sorted keys of "
    "the clips done (8 B a clip, sent once to every read task: 80 MB at 10M), all linear in the clips;",
    "the cluster is this one: the same CPUs for the read tasks (more CPUs divide the per-clip time);",
    "the driver counts the skips from one carrier row per 100,000 clips, so its work does not grow per clip.",
)


def scale_model(m1: dict, n1: int, m2: dict, n2: int) -> list:
    """MODELLED resume of SCALE_TO clips from two measured whole-run resumes: the line
    through (n1, wall1) and (n2, wall2). A slope or intercept that comes out negative
    (noise at small sizes) is printed as it is: the rows then say it."""
    from benchmarks.common import Ratio

    w1, w2 = m1["resume"]["wall_s"], m2["resume"]["wall_s"]
    per_clip = (w2 - w1) / (n2 - n1)
    fixed = w1 - n1 * per_clip
    out = [Ratio(f"MODELLED resume: start-up s / per-clip us (line through {n1:,} and {n2:,} measured)", fixed,
                 "", None, f"{per_clip * 1e6:.1f} us a clip, i.e. {1 / per_clip if per_clip > 0 else float('nan'):,.0f} "
                           f"skips/s beyond start-up")]
    for n in SCALE_TO:
        wall = fixed + n * per_clip
        out.append(Ratio(f"MODELLED resume of {n:,} clips: skipped clips/s, whole run", n / wall if wall > 0 else None,
                         "", None, f"{wall:,.0f} s before the first new clip is labeled"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", nargs=2, metavar=("MANIFEST", "OUT"), help="(internal) one run in this interpreter")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--big", type=int, default=1_000_000)
    ap.add_argument("--before-rows", type=int, default=100_000, help="0: skip the before side")
    args = ap.parse_args(argv)
    if args.side:
        print(MARK + json.dumps(_side(*args.side)))
        return 0
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="emodist-rows-") as tmp:
        found = cases(Path(tmp), args.rows, args.big, args.before_rows)
    for name, m in found.items():
        print(f"{name:>18s}: {m['rows_per_s']:9,.0f} rows/s ({m['marginal_rows_per_s']:,.0f} beyond start-up)  "
              f"{m['skips_per_s']:9,.0f} skips/s ({m['marginal_skips_per_s']:,.0f})  "
              f"driver peak RSS {m['first']['driver_peak_rss_mib']:5.0f} MiB, anon {m['first']['driver_peak_anon_mib']:5.0f} "
              f"shmem {m['first'].get('driver_peak_shmem_mib', float('nan')):4.0f} "
              f"(resume {m['resume']['driver_peak_rss_mib']:.0f}/{m['resume']['driver_peak_anon_mib']:.0f})  "
              f"wall {m['first']['wall_s']:.1f} s, stages busy {m['first']['stage_busy_s']:.1f} s")
    (n1, m1), (n2, m2) = sorted(((m["rows"], m) for k, m in found.items() if k.startswith("after")),
                                key=lambda x: x[0])[-2:]
    for r in scale_model(m1, n1, m2, n2):
        print(f"{r.name}: {r.value if r.value is None else f'{r.value:,.1f}'}  ({r.note})")
    print("assumptions:\n  " + "\n  ".join(SCALE_ASSUMPTIONS))
    print(json.dumps(found, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
