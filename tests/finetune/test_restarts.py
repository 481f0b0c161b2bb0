"""A node lost during `emodist finetune` (a spot instance taken back), rehearsed on one
machine: a head (2 CPUs: the driver, the examples' stages, the epochs' data) and a
`ray start` worker node with the only `trainer` resource, where the training worker
must run (finetune.resources_per_worker). Once an epoch's checkpoint is written the
node's process group is killed and a replacement joins; Ray Train restarts the worker
there and training resumes from that checkpoint, not from the beginning."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.ray_heads import BIN, LocalCluster, cluster_env

ROOT = Path(__file__).resolve().parents[2]
EPOCHS, CLIPS, BATCH = 2, 8, 4


@pytest.fixture
def cluster(tmp_path, emodist_cache):
    (tmp_path / "cluster").mkdir()
    c = LocalCluster(tmp_path / "cluster", cluster_env(emodist_cache))
    try:
        c.head(cpus=2)
        c.node("t1", 1, resources={"trainer": 1})
        yield c
    finally:
        c.close()


@pytest.fixture
def train_clips(tmp_path) -> Path:
    """The labeled clips every finetune here trains on (their manifest)."""
    from emodist.synth import synthesize

    return synthesize(tmp_path / "clips", CLIPS, seed=3, size=64, min_s=1.0, max_s=2.0)


def _metrics(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(s) for s in path.read_text().splitlines()] if path.exists() else []


def _finetune(cluster, clips: Path, out: Path, log: Path, *sets: str,
              env: dict | None = None) -> subprocess.Popen:
    """`emodist finetune` on the cluster (the training worker on the `trainer` node), its
    console in `log`."""
    sets = ("mode=sparse", "decode.width=64", "decode.height=64", f"finetune.batch_size={BATCH}",
            f"finetune.epochs={EPOCHS}", "finetune.strategy=sqrt", "finetune.resources_per_worker={trainer: 1}",
            "finetune.max_failures=1", f"run.ray_address={cluster.address}", *sets)
    return subprocess.Popen([str(BIN / "emodist"), "finetune", "--train", str(clips), "-o", str(out),
                             "--config", "configs/tiny-vlm.yaml", *[a for s in sets for a in ("--set", s)]],
                            cwd=ROOT, env={**cluster.env, **(env or {})}, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _kill_the_trainer_node_after_a_checkpoint(cluster, proc: subprocess.Popen, log: Path, out: Path) -> list[dict]:
    """The metrics lines written before the `trainer` node is killed, mid-training."""
    # A checkpoint is on disk once its epoch's metrics line is (train_loop writes it after the report).
    deadline = time.time() + 300
    while not _metrics(out):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, "no epoch checkpointed in time: " + log.read_text()[-3000:]
        time.sleep(0.05)
    cluster.kill("t1")
    before = _metrics(out)  # the node is gone: no epoch ends until the restart
    assert 1 <= len(before) < EPOCHS, "the kill should land mid-training"
    return before


def _wait(proc: subprocess.Popen, timeout: float) -> None:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_node_lost_mid_training_resumes_from_the_last_checkpoint(cluster, train_clips, tmp_path):
    out, log = tmp_path / "out", tmp_path / "finetune.log"
    proc = _finetune(cluster, train_clips, out, log)
    try:
        before = _kill_the_trainer_node_after_a_checkpoint(cluster, proc, log, out)
        cluster.node("t2", 1, resources={"trainer": 1})
    finally:
        _wait(proc, 300)
    console = log.read_text()
    assert proc.returncode == 0, console[-3000:]

    per_epoch = CLIPS // BATCH
    after = _metrics(out)
    assert [m["epoch"] for m in after] == list(range(EPOCHS))
    assert [m["step"] for m in after] == [per_epoch * (e + 1) for e in range(EPOCHS)]  # not from zero, not doubled
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == EPOCHS and summary["steps"] == EPOCHS * per_epoch
    (restart,) = summary["restarts"]
    resumed = restart["resumed_from_epoch"]
    assert resumed is not None and resumed >= before[-1]["epoch"], restart  # from its checkpoint
    assert restart["resumed_from_step"] == per_epoch * (resumed + 1) > 0, restart
    assert restart["nodes_lost"] and len(summary["nodes_lost"]) == 1, summary
    assert after[resumed + 1]["resumed_from_epoch"] == resumed  # the epoch trained after the restart says so
    lines = [ln for ln in console.splitlines() if "lost mid-training" in ln]
    assert len(lines) == 1 and lines[0].startswith("WARNING emodist"), console[-3000:]
    assert (f"Ray Train restarted the training workers (restart 1 of finetune.max_failures=1) and training resumed "
            f"after epoch {resumed} (step {per_epoch * (resumed + 1)}) from its checkpoint") in lines[0], lines[0]
    meta = json.loads((out / "adapter" / "emodist_adapter.json").read_text())
    assert meta["steps"] == EPOCHS * per_epoch and (out / "adapter" / "adapter_model.safetensors").exists()


def test_each_restart_is_said_once_and_starts_of_earlier_runs_are_not_restarts(ray_local, tmp_path, caplog):
    """Restarts without a lost node (a training worker that died) are said as such; the
    starts of a run before this one (a killed driver's) and this fit's first start are
    no restarts."""
    from emodist.finetune import restarts
    from tests.conftest import tiny_config

    cfg, out = tiny_config("finetune.max_failures=-1"), str(tmp_path)
    caplog.set_level("WARNING", logger="emodist.finetune.restarts")
    restarts.record_start(out, cfg, 0, 0)  # the run before a kill
    watch = restarts.Watch(out, cfg)
    restarts.record_start(out, cfg, 2, 8)  # this fit: resumed from the killed run's checkpoint
    restarts.record_start(out, cfg, 3, 12)  # a worker failed in epoch 3
    restarts.record_start(out, cfg, 0, 0)  # ... and one before any checkpoint (of a fresh OUT)
    watch.stop()
    assert watch.restarts == [{"resumed_from_epoch": 2, "resumed_from_step": 12, "nodes_lost": []},
                              {"resumed_from_epoch": None, "resumed_from_step": 0, "nodes_lost": []}]
    said = [r.getMessage() for r in caplog.records]
    assert said == ["the training workers failed (Ray's log says why); Ray Train restarted the training workers "
                    "(restart 1 of finetune.max_failures=no limit) and training resumed after epoch 2 (step 12) "
                    "from its checkpoint",
                    "the training workers failed (Ray's log says why); Ray Train restarted the training workers "
                    "(restart 2 of finetune.max_failures=no limit) and training started again from the first epoch "
                    "(no checkpoint yet)"]
    assert len(restarts.read_starts(out, cfg)) == 4


@pytest.mark.slow
def test_a_dead_training_worker_is_restarted_up_to_max_failures_then_the_finetune_stops(ray_local, inject, train_clips,
                                                                                       tmp_path):
    """Ray Train's own restart, on the session's local Ray: a training worker that dies
    (os._exit) in epoch 1 is restarted from epoch 0's checkpoint with
    finetune.max_failures=1; with 0 the finetune stops in one line, its checkpoint kept."""
    from emodist.finetune.job import finetune, read_metrics
    from emodist.pipeline import RunStopped
    from tests.conftest import tiny_config

    per_epoch = CLIPS // BATCH
    sets = ["mode=sparse", "decode.width=64", "decode.height=64", f"finetune.batch_size={BATCH}",
            f"finetune.epochs={EPOCHS}", f"finetune.examples_dir={tmp_path / 'examples'}"]
    dies = inject("train", "exit", after=per_epoch + 1)  # epoch 1's first step, after epoch 0's checkpoint

    cfg = tiny_config(*sets, "finetune.max_failures=0")
    with pytest.raises(RunStopped) as stopped:
        finetune(cfg, str(train_clips), str(tmp_path / "stops"))
    assert dies.exists()
    msg = str(stopped.value)
    assert msg.startswith("training stopped: its workers failed more than finetune.max_failures=0 time(s) (") and \
        msg.endswith("the checkpoints are kept: the same command will resume after epoch 0, or raise "
                     "finetune.max_failures") and "\n" not in msg, msg
    assert [m["epoch"] for m in read_metrics(str(tmp_path / "stops"), cfg)] == [0]
    assert not (tmp_path / "stops" / "adapter").exists()

    dies.unlink()  # the fault fires again, once
    summary = finetune(tiny_config(*sets, "finetune.max_failures=1"), str(train_clips), str(tmp_path / "goes_on"))
    assert dies.exists()
    assert summary.restarts == [{"resumed_from_epoch": 0, "resumed_from_step": per_epoch, "nodes_lost": []}]
    assert (summary.epochs, summary.steps) == (EPOCHS, EPOCHS * per_epoch)  # epoch 1 trained once, on top of epoch 0
    assert (tmp_path / "goes_on" / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_a_node_lost_with_none_to_replace_it_stops_the_finetune_after_wait_for_nodes_s(cluster, train_clips, tmp_path):
    """No node with room joins: Ray Train by default starts the workers again without end
    (each start waits RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S for room), so the finetune
    waited forever, saying nothing. It waits run.wait_for_nodes_s (here 6 s, in starts of
    3 s), stops in one line, and the same command resumes once a node with room joins."""
    from emodist.exits import EXIT_STOPPED

    out, log = tmp_path / "out", tmp_path / "stops.log"
    proc = _finetune(cluster, train_clips, out, log, "run.wait_for_nodes_s=6",
                     env={"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "3"})
    try:
        _kill_the_trainer_node_after_a_checkpoint(cluster, proc, log, out)
        waited = time.time()
    finally:
        _wait(proc, 240)
    waited = time.time() - waited
    console = log.read_text()
    assert proc.returncode == EXIT_STOPPED, console[-3000:]
    done = _metrics(out)[-1]["epoch"]
    last = console.strip().splitlines()[-1]
    assert last.startswith("error: training stopped: the cluster had no room for its 1 worker(s) "), console[-3000:]
    assert "for 6 s (run.wait_for_nodes_s) (1 node(s) lost: " in last, last
    assert f"once the cluster has room the same command will resume after epoch {done}" in last, last
    assert waited >= 6, waited  # it waited (two starts of 3 s), then stopped
    # Ray Train's controller (its retries' tracebacks) and workers stay in Ray's logs
    assert "Traceback" not in console and "TrainController" not in console, console[-3000:]

    cluster.node("t2", 1, resources={"trainer": 1})
    log = tmp_path / "resumes.log"
    proc = _finetune(cluster, train_clips, out, log)
    _wait(proc, 300)
    assert proc.returncode == 0, log.read_text()[-3000:]
    after = _metrics(out)
    assert [m["epoch"] for m in after] == list(range(EPOCHS))  # resumed: each epoch once
    assert after[done + 1]["resumed_from_epoch"] == done
