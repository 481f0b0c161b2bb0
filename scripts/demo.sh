#!/usr/bin/env bash
# The demo: synthesize face clips and label them, fully offline, on a local Ray.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
CLIPS=${CLIPS:-12}
.venv/bin/emodist synth demo/clips --clips "$CLIPS" --seed 0
.venv/bin/emodist run --input demo/clips/manifest.csv --output demo/out --config configs/demo.yaml "$@"
