"""Entrypoint for `ray job submit`: emodist's throughput benchmarks (benchmarks/).

    ray job submit --address http://HEAD:8265 --working-dir . \
        --runtime-env-json '{"excludes": [".venv", ".git", "demo"]}' \
        -- python ray_jobs/benchmark.py --quick

Arguments are those of `python -m benchmarks` (--quick, --sections, --out, ...); the
tables print to the job's log and land in --out on the driver's node.
"""
from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/ is not part of the installed package: it travels in the job's working dir.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.__main__ import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
