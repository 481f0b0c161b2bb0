#!/usr/bin/env bash
# The test suite, from a fresh clone: installs what it needs, then runs pytest.
#
#   bash scripts/test.sh          # quick tier: every test not marked slow (under 10 minutes here)
#   bash scripts/test.sh --all    # every test (what CI runs): the quick tier, the slow tier
#                                 # (multi-node clusters, kills, `ray job submit`, the browser,
#                                 # benchmark smoke runs) and the vLLM backend's tests in .venv-vllm
# Further arguments go to the main suite's pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
all=false
if [ "${1:-}" = "--all" ]; then all=true; shift; fi
# Two pytest workers, whole files each (module fixtures such as a test cluster stay in
# one worker): most tests wait on Ray start-ups and subprocesses, so 2 cores do 2 at once.
workers=${EMODIST_TEST_WORKERS:-2}

bash scripts/setup.sh
.venv/bin/emodist assets fetch >/dev/null  # real weights and videos, pinned and hashed
if ! $all; then
    exec .venv/bin/python -m pytest -q -m "not slow" -n "$workers" --dist loadfile "$@"
fi

# --all: the quick tier first, exactly as above (its time, set-up included, is printed),
# then the slow tier, one test at a time, while the vLLM venv installs, then the vLLM suite.
status=0
.venv/bin/python -m pytest -q -m "not slow" -n "$workers" --dist loadfile "$@" || status=$?
echo "test.sh: set-up and the quick tier took $SECONDS s"
# The review page's browser test (tests/audit/test_page.py) drives Debian's chromium
# through its chromedriver; installed once, skipped when both are on PATH.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
# The vLLM venv installs (pip: mostly downloads and unpacking) while the slow tier runs.
mkdir -p .ci-logs
bash scripts/setup_vllm.sh >.ci-logs/setup_vllm.log 2>&1 &
setup_vllm=$!
# One test at a time: these start clusters, kill nodes and submit jobs, and side by side on
# 2 cores they starved each other (a job's refusal text cut short, missed heartbeats).
.venv/bin/python -m pytest -q -m slow "$@" || status=$?
if ! wait "$setup_vllm"; then
    cat .ci-logs/setup_vllm.log >&2
    echo "test.sh: scripts/setup_vllm.sh failed (its output above)" >&2
    exit 1
fi
.venv-vllm/bin/python -m pytest -q tests/vllm_backend || status=$?
echo "test.sh: every test, set-up included, took $SECONDS s"
exit "$status"
