"""Entrypoint for `ray job submit`: fine-tune the labeler on the cluster the job runs on.

    ray job submit --address http://HEAD:8265 --working-dir . \\
        --runtime-env-json '{"excludes": [".venv", ".git", "demo"]}' \\
        -- python ray_jobs/finetune.py --config configs/cluster-msce.yaml \\
           --train s3://bucket/dfew/train_fold1.csv --output s3://bucket/adapters/dfew-sqrt \\
           --set finetune.strategy=sqrt --set finetune.workers=8 --set finetune.gpus_per_worker=1

Resubmitting the same command resumes from the last epoch's checkpoint. The summary is
printed as JSON on the last line and written to OUTPUT/summary.json. Exit status as
`emodist finetune`: 0 trained, 2 could not start (config, manifest, labels), 1 stopped
(the workers failed more than finetune.max_failures times; resubmit to resume).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict


def main(argv: list[str] | None = None) -> int:
    from emodist.config import load_config
    from emodist.exits import EXIT_OK, exit_status
    from emodist.finetune.job import finetune
    from emodist.storage import scrub

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="YAML config file (labeler, plan, finetune section).")
    ap.add_argument("--train", required=True, help="Labeled training manifest; s3:// works.")
    ap.add_argument("--output", required=True, help="Output folder; s3:// works.")
    ap.add_argument("--set", action="append", default=[], help="Override a config key (key=value).")
    ap.add_argument("--descriptions-from", default=None, help="An earlier run's output to take descriptions from.")
    ap.add_argument("--config-hash", default=None,
                    help="With --descriptions-from: the rows of this config_hash (an output with two configs).")
    args = ap.parse_args(argv)
    try:
        summary = finetune(load_config(args.config, args.set), args.train, args.output,
                           descriptions_from=args.descriptions_from, config_hash=args.config_hash)
    except Exception as exc:  # refused at start (2) or stopped midway (1); any other error raises
        if (code := exit_status(exc)) is None:
            raise
        print(f"error: {scrub(str(exc))}", file=sys.stderr)
        return code
    print(json.dumps(asdict(summary)))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
