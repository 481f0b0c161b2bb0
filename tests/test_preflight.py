"""Settings that can be checked without Ray are refused before Ray starts: `emodist run`
exits 2 with one line naming the key, its value and the fix, and takes no lease (the
lease comes before Ray), so nothing of the run started."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EMODIST = str(Path(sys.executable).parent / "emodist")


@pytest.fixture(scope="module")
def synth_clips(tmp_path_factory) -> Path:
    """Three clips as a user makes them: `emodist synth`."""
    out = tmp_path_factory.mktemp("synth")
    res = subprocess.run([EMODIST, "synth", str(out), "--clips", "3", "--size", "64"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return out


def refused(clips: Path, out: Path, *sets: str) -> str:
    """The one line `emodist run` gave for a refusal at start."""
    cmd = [EMODIST, "run", "-i", str(clips), "-o", str(out), "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    lines = (res.stdout + res.stderr).strip().splitlines()
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert not (out / "_emodist").exists(), "the run took its lease: it got as far as starting Ray"
    return lines[0]


def test_a_labeler_with_backend_none_is_refused_at_start(synth_clips, tmp_path):
    line = refused(synth_clips, tmp_path / "out", "labeler.backend=none")
    assert "labeler.backend=none" in line and "set labeler.backend to specialist" in line


def _has_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU: cuda is a valid device here")
@pytest.mark.parametrize("role", ["labeler", "describer"])
def test_a_cuda_device_without_a_gpu_is_refused_at_start(synth_clips, tmp_path, role):
    line = refused(synth_clips, tmp_path / "out", f"{role}.device=cuda")
    assert f"{role}.device=cuda but this machine has no GPU" in line and f"set {role}.device=cpu or auto" in line


def test_a_model_the_specialist_backend_would_ignore_is_refused_not_replaced(synth_clips, tmp_path):
    # The default labeler is the specialist: a model folder set without a VLM backend
    # used to be ignored, every clip labeled by face-api with only the config hash changed.
    line = refused(synth_clips, tmp_path / "out", "labeler.model=/no/such/folder")
    assert "labeler.model='/no/such/folder' is not run by labeler.backend=specialist" in line
    assert "set labeler.backend=transformers (or vllm)" in line


def test_a_setting_the_specialist_backend_ignores_is_refused(synth_clips, tmp_path):
    line = refused(synth_clips, tmp_path / "out", "labeler.permutations=3")
    assert "labeler.permutations=3 has no effect with labeler.backend=specialist" in line


def test_a_missing_model_folder_of_a_vlm_backend_is_refused_at_start(synth_clips, tmp_path):
    line = refused(synth_clips, tmp_path / "out", "labeler.backend=transformers", "labeler.model=/no/such/folder",
                   "describer.backend=none")
    assert "labeler.model='/no/such/folder': no model folder there" in line


def test_text_mode_without_a_describer_is_refused_at_start(synth_clips, tmp_path):
    line = refused(synth_clips, tmp_path / "out", "mode=text", "describer.backend=none")
    assert "mode=text labels from the motion descriptions alone, but describer.backend=none" in line


def test_a_model_folder_without_weights_or_tokenizer_is_refused_at_start(synth_clips, tmp_path, tiny_vlm):
    """A folder with config.json copied but the weights (or the tokenizer) left behind."""
    import shutil

    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(tiny_vlm / "config.json", partial)
    line = refused(synth_clips, tmp_path / "out", "labeler.backend=transformers", f"labeler.model={partial}",
                   "describer.backend=none")
    assert "has a config.json but no weights" in line and f"labeler.model='{partial}'" in line
    for f in tiny_vlm.glob("*.safetensors"):
        shutil.copy(f, partial)
    line = refused(synth_clips, tmp_path / "out2", "labeler.backend=transformers", f"labeler.model={partial}",
                   "describer.backend=none")
    assert "has no tokenizer" in line


def test_the_vllm_backend_without_vllm_is_refused_at_start(synth_clips, tmp_path):
    import importlib.util

    try:
        if importlib.util.find_spec("vllm.sampling_params") is not None:
            pytest.skip("vllm is installed in this venv")
    except ModuleNotFoundError:
        pass
    line = refused(synth_clips, tmp_path / "out", "labeler.backend=vllm", "labeler.model=builtin:tiny-vlm",
                   "describer.backend=none")
    assert "labeler.backend=vllm but vllm is not installed" in line and "scripts/setup_vllm.sh" in line


def test_vllm_with_a_vision_model_needs_a_torchvision_that_loads(tmp_path, tiny_vlm, monkeypatch):
    """vLLM's vision processors import torchvision; PyPI's CUDA build of it does not load
    against a CPU torch: refused before any actor, naming the venv that makes it load.
    A text-only folder (no image processor) does not need it."""
    import importlib.util

    from emodist import preflight
    from emodist.config import ConfigError, LabelerConfig

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real(name, *a))

    def broken():
        raise RuntimeError("operator torchvision::nms does not exist")

    with pytest.raises(ConfigError) as err:
        preflight.check_vllm(LabelerConfig(backend="vllm", model=str(tiny_vlm)), "labeler", broken)
    msg = str(err.value)
    assert "vLLM needs torchvision for vision models and it does not load here" in msg
    assert "torchvision::nms does not exist" in msg and "scripts/setup_vllm.sh" in msg and "\n" not in msg
    text_only = tmp_path / "lm"
    text_only.mkdir()
    (text_only / "config.json").write_text("{}")
    preflight.check_vllm(LabelerConfig(backend="vllm", model=str(text_only)), "labeler", broken)  # not asked
    preflight.check_vllm(LabelerConfig(backend="vllm", model=str(tiny_vlm)), "labeler", lambda: None)
