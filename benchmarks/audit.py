"""`emodist audit` at scale: rows/s and peak memory at 100k and 1M prediction rows.

    python benchmarks/audit.py                       # 100k and 1M rows, one run
    python benchmarks/audit.py --sizes 100000        # one size

Each size gets a synthetic run folder with the real prediction schema (emodist/schema.py,
written by emodist/audit/synthetic.py: 7 classes, 10% of the manifest's labels wrong,
parts of 100k rows) and a parquet manifest. The audit (ranking, flip table, issues.parquet,
audit.json, the review page of the top 200 without keyframes: the synthetic uris are no
files) runs in a fresh interpreter, so its peak RSS (VmHWM) is its own; the same
interpreter's RSS after the imports alone is printed beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "RESULT "

_CHILD = r"""
import json, sys, time
def hwm():  # this process image's peak RSS (ru_maxrss would carry the parent's across fork)
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
from emodist.audit.report import audit
from emodist.config import Config
import cleanlab.experimental.label_issues_batched, sklearn.metrics  # imports before the baseline
base = hwm()
t = time.perf_counter()
s = audit(sys.argv[1], sys.argv[2], sys.argv[3], Config(), top=200, with_frames=False)
secs = time.perf_counter() - t
peak = hwm()
print("RESULT " + json.dumps({"seconds": secs, "peak_rss_mb": peak / 1024, "import_rss_mb": base / 1024,
                              "issues": s["counts"]["issues"], "scored": s["counts"]["scored"]}))
"""


def build(folder: Path, n: int) -> tuple[Path, Path, float]:
    from emodist.audit import synthetic
    from emodist.labels import DFEW

    t = time.perf_counter()
    case = synthetic.make_case(n, DFEW, seed=0, noise=0.1)
    synthetic.write_predictions(folder / "out", case, DFEW, part_rows=100_000)
    manifest = synthetic.write_manifest(folder / "manifest.parquet", case, DFEW)
    return folder / "out", manifest, time.perf_counter() - t


def measure(n: int, tmp: Path) -> dict:
    from emodist.config import Config
    from emodist.output.folder import RunFolder

    out, manifest, build_s = build(tmp / f"n{n}", n)
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(out), str(manifest), str(tmp / f"report{n}")],
                          capture_output=True, text=True, cwd=ROOT)
    line = next((x for x in proc.stdout.splitlines() if x.startswith(MARK)), None)
    if line is None:
        raise SystemExit(f"audit of {n} rows failed:\n{proc.stderr[-3000:]}")
    r = json.loads(line[len(MARK):])
    r |= {"rows": n, "rows_per_s": n / r["seconds"], "build_s": build_s,
          "parquet_mb": sum(os.path.getsize(u) for u in RunFolder(str(out), Config()).parts()) / 2**20}
    return r


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated row counts")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="emodist-audit-bench-") as d:
        for n in (int(x) for x in args.sizes.split(",")):
            r = measure(n, Path(d))
            results.append(r)
            print(f"{r['rows']:>9} rows: {r['seconds']:7.1f} s, {r['rows_per_s']:>9,.0f} rows/s, peak RSS "
                  f"{r['peak_rss_mb']:7.1f} MiB (imports alone {r['import_rss_mb']:.1f} MiB); "
                  f"{r['issues']} issues; predictions {r['parquet_mb']:.1f} MiB on disk", flush=True)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    if len(results) > 1:
        a, b = results[0], results[-1]
        print(f"peak RSS above the imports: {a['peak_rss_mb'] - a['import_rss_mb']:.1f} MiB at {a['rows']:,} rows, "
              f"{b['peak_rss_mb'] - b['import_rss_mb']:.1f} MiB at {b['rows']:,} rows")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=1))
    return results


if __name__ == "__main__":
    main()
