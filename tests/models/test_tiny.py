"""The builtin tiny models (emodist/models/tiny.py): their weights come from their own seed,
and building one leaves the process's torch random state as it was."""
from __future__ import annotations

import torch
from safetensors.torch import load_file

from emodist.models.tiny import build_tiny_vlm


def test_a_tiny_model_is_its_seeds_and_leaves_the_process_random_state(tmp_path):
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    a = load_file(next(build_tiny_vlm(tmp_path / "a", seed=0).glob("*.safetensors")))
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.rand(10)  # whatever the process draws in between
    b = load_file(next(build_tiny_vlm(tmp_path / "b", seed=0).glob("*.safetensors")))
    c = load_file(next(build_tiny_vlm(tmp_path / "c", seed=1).glob("*.safetensors")))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].dtype.is_floating_point and a[k].numel() > 1)
