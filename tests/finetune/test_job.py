"""`emodist finetune` end to end: bad training manifests refused naming the clip or
class, a kill mid-training resumed from the last epoch's checkpoint, and the adapter it
writes labeling every clip in `emodist run`."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from emodist.cli import app

ROOT = Path(__file__).resolve().parents[2]
EMODIST = str(Path(sys.executable).parent / "emodist")
TINY = ["--config", str(ROOT / "configs" / "tiny-vlm.yaml"), "--set", "mode=sparse", "--set", "run.num_cpus=2",
        "--set", "decode.width=64", "--set", "decode.height=64", "--set", "finetune.batch_size=4"]


@pytest.fixture(scope="module")
def train_clips(tmp_path_factory) -> Path:
    from emodist.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("train"), 16, seed=3, size=64, min_s=1.0, max_s=2.0)


def _cli(*args):
    return CliRunner().invoke(app, list(args))


def test_bad_training_manifests_are_refused_naming_the_clip_or_class(train_clips, tmp_path):
    # Manifests beside the clips, uris relative to them: ids are the clips' names.
    folder = train_clips.parent
    unlabeled = folder / "unlabeled.csv"
    unlabeled.write_text("uri\n" + "".join(f"clip_0000{i}.mp4\n" for i in range(3)))
    res = _cli("finetune", "--train", str(unlabeled), "-o", str(tmp_path / "o1"), *TINY)
    assert res.exit_code == 2
    assert "3 clip(s) have no label (the first: 'clip_00000'); fine-tuning needs a 'label' column" in res.output

    outside = folder / "outside.csv"
    outside.write_text("uri,label\nclip_00000.mp4,happy\nclip_00001.mp4,joyful\n")
    res = _cli("finetune", "--train", str(outside), "-o", str(tmp_path / "o2"), *TINY)
    assert res.exit_code == 2
    assert "clip 'clip_00001' is labeled 'joyful', which is not one of the labels ['happy', 'sad'," in res.output
    assert "fix its label, or set labels to the set it belongs to" in res.output

    one_class = folder / "one.csv"
    one_class.write_text("uri,label\nclip_00000.mp4,happy\nclip_00001.mp4,sad\n")
    res = _cli("finetune", "--train", str(one_class), "-o", str(tmp_path / "o3"), *TINY,
               "--set", "finetune.strategy=balanced")
    assert res.exit_code == 2
    assert ("finetune.strategy=balanced: balanced sampling draws every class, but neutral, angry, surprise, disgust, "
            "fear have no training examples") in res.output
    assert not (tmp_path / "o3" / "examples").exists()  # refused before any clip was decoded


def test_the_ray_job_entrypoint_refuses_a_bad_manifest_with_exit_2(train_clips, tmp_path, capsys):
    """ray_jobs/finetune.py (what `ray job submit` runs): the same checks, one line on
    stderr, exit 2, nothing trained."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ft_job", ROOT / "ray_jobs" / "finetune.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    bad = train_clips.parent / "joyful.csv"
    bad.write_text("uri,label\nclip_00000.mp4,joyful\n")
    code = job.main(["--config", str(ROOT / "configs" / "tiny-vlm.yaml"), "--train", str(bad),
                     "--output", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "clip 'clip_00000' is labeled 'joyful'" in err
    assert not (tmp_path / "o" / "adapter").exists()


def _metrics(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(s) for s in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def trained(train_clips, tmp_path_factory, emodist_cache):
    """A finetune killed (SIGKILL, the driver and its Ray) after its first epoch's
    checkpoint, then run again to the end."""
    out = tmp_path_factory.mktemp("ft") / "out"
    cmd = [EMODIST, "finetune", "--train", str(train_clips), "-o", str(out), *TINY,
           "--set", "finetune.epochs=3", "--set", "finetune.strategy=sqrt"]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not _metrics(out):
        assert proc.poll() is None, "finetune ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _metrics(out)
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return out, before, res.stdout, res.stderr


@pytest.mark.slow
def test_a_killed_finetune_resumes_from_its_last_checkpoint(trained):
    out, before, stdout, _ = trained
    assert 1 <= len(before) < 3, "the kill should land mid-training"
    after = _metrics(out)
    assert [m["epoch"] for m in after] == [0, 1, 2]
    per_epoch = after[0]["step"]
    assert per_epoch == 4  # 16 clips, 4 a step
    # the step count goes on from the checkpoint, not from zero
    assert [m["step"] for m in after] == [per_epoch, 2 * per_epoch, 3 * per_epoch]
    last_before = before[-1]["epoch"]
    assert after[last_before + 1]["resumed_from_epoch"] == last_before
    assert f"resumed after epoch {last_before}" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["steps"] == 3 * per_epoch
    # sqrt sampling: each class's share of the epoch is n_j^0.5 / sum
    n = np.array(list(summary["class_counts"].values()), dtype=float)
    shares = np.array(list(after[0]["class_shares"].values()))
    np.testing.assert_allclose(shares, np.sqrt(n) / np.sqrt(n).sum(), atol=1 / 16 + 1e-3)
    meta = json.loads((out / "adapter" / "emodist_adapter.json").read_text())
    assert meta["base_model"] == "builtin:tiny-vlm" and meta["steps"] == 3 * per_epoch and meta["strategy"] == "sqrt"


@pytest.mark.slow
def test_a_finetune_console_holds_only_emodists_lines(trained):
    """No Ray Train or Ray Data output (placement-group cleaner tracebacks, execution
    plans per epoch, TrainingReport dicts, core_worker lines): they stay in Ray's logs."""
    _, _, stdout, stderr = trained
    console = stdout + stderr
    for ray_text in ("TrainingReport(", "Execution plan", "Starting execution of Dataset", "waiting for GCS",
                     "Traceback", "core_worker.cc", "RayTrainWorker", "(pid="):
        assert ray_text not in console, console
    assert [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("WARNING emodist")] == [], stderr
    assert stdout.splitlines()[-2].startswith("trained 3 epochs"), stdout


@pytest.mark.slow
def test_the_trained_adapter_changes_the_distributions_and_labels_every_clip(trained, train_clips, ray_local, tmp_path):
    import pyarrow.dataset as pads

    from emodist.finetune import examples as ex
    from emodist.models.engine import run_sync
    from emodist.models.hf_engine import HFEngine
    from emodist.models.vlm import VLMLabeler
    from emodist.pipeline import run
    from tests.conftest import tiny_config

    out, _, _, _ = trained
    cfg = tiny_config("mode=sparse", "decode.width=64", "decode.height=64", f"labeler.adapter={out / 'adapter'}")
    (folder,) = (out / "examples").iterdir()
    clips = [ex.clip_input(r) for r in pads.dataset(folder).to_table().slice(0, 4).to_pylist()]

    def probs(engine, adapter):
        lab = VLMLabeler(cfg.labeler, cfg.mode, cfg.label_names, engine, adapter=adapter)
        return np.stack([r.probs for r in run_sync(lab.score(clips, cfg.label_names))])

    engine = HFEngine("builtin:tiny-vlm", "cpu", adapters={"labeler": str(out / "adapter")})
    try:
        assert np.abs(probs(engine, "labeler") - probs(engine, None)).max() > 1e-3
    finally:
        engine.close()

    summary = run(cfg, str(train_clips), str(tmp_path / "labeled"), progress=False)
    assert summary.labeled == 16 and summary.failed == 0
    models = set(pads.dataset(tmp_path / "labeled" / "predictions").to_table().column("labeler_model").to_pylist())
    assert models == {f"builtin:tiny-vlm+adapter:{out / 'adapter'}"}


@pytest.mark.slow
def test_checkpoints_and_adapter_on_s3_and_a_finished_run_is_not_trained_again(train_clips, s3, ray_local):
    """OUT on object storage (SeaweedFS): Ray Train's checkpoints, metrics.jsonl and the
    adapter land under s3://; the same command again finds every epoch done."""
    from emodist.finetune.job import finetune, read_metrics

    cfg = s3.config("labeler.backend=transformers", "labeler.model=builtin:tiny-vlm", "mode=sparse",
                    "decode.width=64", "decode.height=64", "finetune.batch_size=8", "finetune.epochs=1")
    out = "s3://emodist-out/finetune/run1"
    first = finetune(cfg, str(train_clips), out)
    assert (first.epochs, first.steps, first.examples) == (1, 2, 16)
    fs = s3.admin
    assert fs.exists("emodist-out/finetune/run1/adapter/adapter_model.safetensors")
    meta = json.loads(fs.cat_file("emodist-out/finetune/run1/adapter/emodist_adapter.json"))
    assert meta["steps"] == 2 and meta["fingerprint"]
    assert [m["epoch"] for m in read_metrics(out, cfg)] == [0]
    assert any("checkpoint" in p for p in fs.ls("emodist-out/finetune/run1/train"))
    again = finetune(cfg, str(train_clips), out)
    assert (again.epochs, again.steps) == (1, 2) and [m["epoch"] for m in read_metrics(out, cfg)] == [0]
    assert json.loads(fs.cat_file("emodist-out/finetune/run1/adapter/emodist_adapter.json"))["fingerprint"] == meta["fingerprint"]
