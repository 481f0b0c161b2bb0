"""vllm_engine.py's GPU choice for 'cuda:N' (pick_gpu): the environment is written only in a
Ray actor, which owns its process; the caller's process keeps its own. (The engine itself
is tested with the vLLM build in tests/vllm_backend/.)"""
from __future__ import annotations

import os

import pytest

from emodist.models.vllm_engine import pick_gpu


def test_outside_a_ray_actor_the_environment_is_never_written(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(ValueError, match=r"device='cuda:1' outside a Ray actor: .* set CUDA_VISIBLE_DEVICES=1 "
                                         r"in this process's environment and device=cuda"):
        pick_gpu("cuda:1")
    pick_gpu("cuda:0")  # the first visible GPU: nothing to choose
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # the caller chose: kept
    pick_gpu("cuda:1")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"


def test_a_ray_actor_without_a_gpu_set_takes_the_index(ray_local, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    @ray_local.remote(num_cpus=0)
    class Probe:
        def pick(self, device: str) -> str | None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)  # this actor's own process
            pick_gpu(device)
            return os.environ.get("CUDA_VISIBLE_DEVICES")

    probe = Probe.remote()
    try:
        assert ray_local.get(probe.pick.remote("cuda:1")) == "1"
    finally:
        ray_local.kill(probe)
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
