"""Entrypoint for `ray job submit`: relabel a collection on the cluster the job runs on.

    ray job submit --address http://HEAD:8265 --working-dir . \
        --runtime-env-json '{"excludes": [".venv", ".git", "demo"]}' \
        -- python ray_jobs/relabel.py --config configs/cluster-msce.yaml \
           --input s3://bucket/dfew/manifest.csv --output s3://bucket/runs/dfew-msce

Resubmitting the same command resumes: finished clips are skipped. The summary is
printed as JSON on the last line and written to OUTPUT/summary.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict


def main(argv: list[str] | None = None) -> int:
    from emodist.config import ConfigError, load_config
    from emodist.pipeline import run
    from emodist.storage import SourceError

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="YAML config file (resources, models, plan).")
    ap.add_argument("--input", required=True, help="Folder, glob or manifest; s3:// works.")
    ap.add_argument("--output", required=True, help="Output folder; s3:// works.")
    ap.add_argument("--set", action="append", default=[], help="Override a config key (key=value).")
    ap.add_argument("--retry-failures", action="store_true", help="Rerun only the failed clips.")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        summary = run(cfg, args.input, args.output, progress=False, retry_failures=args.retry_failures)
    except (ConfigError, SourceError) as exc:  # refused at start: nothing was run
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
