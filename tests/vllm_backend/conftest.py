"""Shared by the in-process vLLM engine tests."""
from __future__ import annotations

import os

import pytest

# The async engine's core always runs in a process of its own; without V1
# multiprocessing its worker runs inside that process (2 processes instead of 3: about
# half the start-up on 2 cores).
ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


@pytest.fixture(scope="module")
def vllm_env():
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
