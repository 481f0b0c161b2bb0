#!/usr/bin/env bash
# Create .venv and install emodist with its test extras. Idempotent: a stamp of
# pyproject.toml skips the install when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# The CPU build of torch, installed first: a bare 'torch' requirement would pull a
# multi-GB CUDA build on machines without a GPU. Override on GPU machines.
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=".venv/.emodist-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    .venv/bin/pip install -q --disable-pip-version-check "$TORCH_SPEC"
    .venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
    rm -f .venv/.emodist-* && touch "$stamp"
fi
