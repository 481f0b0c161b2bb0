"""Entrypoint for `ray job submit`: relabel a collection on the cluster the job runs on.

    ray job submit --address http://HEAD:8265 --working-dir . \
        --runtime-env-json '{"excludes": [".venv", ".git", "demo"]}' \
        -- python ray_jobs/relabel.py --config configs/cluster-msce.yaml \
           --input s3://bucket/dfew/manifest.csv --output s3://bucket/runs/dfew-msce

Resubmitting the same command resumes: finished clips are skipped. The summary is
printed as JSON on the last line and written to OUTPUT/summary.json. Exit status as
`emodist run`: 0 labeled (some may have failed), 3 every clip failed, 2 could not start,
1 stopped midway (resubmit to resume).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict


def main(argv: list[str] | None = None) -> int:
    from emodist.config import load_config
    from emodist.exits import EXIT_ALL_FAILED, EXIT_OK, exit_status
    from emodist.pipeline import run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="YAML config file (resources, models, plan).")
    ap.add_argument("--input", required=True, help="Folder, glob or manifest; s3:// works.")
    ap.add_argument("--output", required=True, help="Output folder; s3:// works.")
    ap.add_argument("--set", action="append", default=[], help="Override a config key (key=value).")
    ap.add_argument("--retry-failures", action="store_true", help="Rerun only the failed clips.")
    ap.add_argument("--new-config", action="store_true", help="Label again beside rows of another config.")
    args = ap.parse_args(argv)
    try:
        summary = run(load_config(args.config, args.set), args.input, args.output, progress=False,
                      retry_failures=args.retry_failures, new_config=args.new_config)
    except Exception as exc:  # refused at start (2) or stopped midway (1); any other error raises
        if (code := exit_status(exc)) is None:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return code
    print(json.dumps(asdict(summary)))
    return EXIT_ALL_FAILED if summary.all_failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
