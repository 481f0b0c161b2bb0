"""A worker node lost mid-run (a spot instance taken back), rehearsed on one machine: a
head and worker nodes started with `ray start` on 127.0.0.1, each in its own process
group; one worker node's group (its raylet, object store and every actor under it) is
killed with SIGKILL while clips are in flight. The run finishes with exactly one row
per clip, and its summary says which node was lost and what was retried.

The driver (`emodist run` attached with run.ray_address) stays on the head, which has
no CPUs: every stage actor and read task lands on the worker nodes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import rows_by_clip
from tests.ray_heads import BIN, LocalCluster, cluster_env

ROOT = Path(__file__).resolve().parents[1]
CLIPS = 60

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def head(tmp_path_factory, emodist_cache):
    c = LocalCluster(tmp_path_factory.mktemp("cluster"), cluster_env(emodist_cache))
    c.head()
    yield c
    c.close()


@pytest.fixture
def cluster(head):
    """The head, and the worker nodes a test starts: stopped when it ends."""
    yield head
    for proc in head.runs:  # a run a failed test left behind
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    head.runs.clear()
    for name in [n for n in head.procs if n != "head"]:
        head.stop(name)


@pytest.fixture(scope="module")
def many_clips(tmp_path_factory) -> Path:
    from emodist.synth import synthesize

    out = tmp_path_factory.mktemp("many")
    synthesize(out, CLIPS, seed=3, size=64, min_s=1.0, max_s=1.5)
    return out


# msce with 3 label orders: enough model work per clip that the kill lands mid-run
TINY = ["mode=msce", "labeler.permutations=3", "decode.width=64", "decode.height=64", "decode.batch_size=2", "labeler.batch_size=2",
        "run.part_rows=4", "run.max_nodes=null", "run.check_models=true"]


def start_run(cluster: LocalCluster, clips: Path, out: Path, overrides: list[str]) -> subprocess.Popen:
    sets = [a for o in [*TINY, *overrides, f"run.ray_address={cluster.address}"] for a in ("--set", o)]
    log = (out.parent / "run.log").open("w")
    cluster.runs.append(subprocess.Popen([str(BIN / "emodist"), "run", "-i", str(clips / "manifest.csv"), "-o", str(out),
                             "--config", "configs/tiny-vlm.yaml", "--quiet", *sets],
                            cwd=ROOT, env=cluster.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    return cluster.runs[-1]


def wait_for_rows(proc: subprocess.Popen, out: Path, timeout: float = 240) -> None:
    """Until the first committed part: clips are in flight, some are done."""
    deadline = time.time() + timeout
    while not list((out / "predictions").glob("part-*.parquet")):
        assert proc.poll() is None, (out.parent / "run.log").read_text()[-3000:]
        assert time.time() < deadline, "no row committed in time"
        time.sleep(0.2)


def finish(proc: subprocess.Popen, out: Path, timeout: float = 300) -> tuple[dict, str]:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the run did not finish: " + (out.parent / "run.log").read_text()[-3000:])
    text = (out.parent / "run.log").read_text()
    assert proc.returncode == 0, text[-3000:]
    return json.loads((out / "summary.json").read_text()), text


def one_row_per_clip(out: Path) -> None:
    rows = rows_by_clip(out)
    assert len(rows) == CLIPS, f"{len(rows)} clips have rows of {CLIPS}"
    assert all(len(v) == 1 for v in rows.values()), {k: v for k, v in rows.items() if len(v) != 1}


def test_a_node_lost_mid_run_the_others_finish_it(cluster, many_clips, tmp_path):
    """Two 2-CPU workers; the one holding stage actors is killed mid-run. The actors
    restart on the other node (room for every pool), their batches are retried there."""
    cluster.node("w1", 2)
    cluster.node("w2", 2)
    out = tmp_path / "out"
    proc = start_run(cluster, many_clips, out, ["decode.actors=2", "labeler.actors=2"])
    wait_for_rows(proc, out)
    victim = max(("w1", "w2"), key=cluster.actors_on)
    assert cluster.actors_on(victim) > 0
    cluster.kill(victim)
    summary, text = finish(proc, out)
    one_row_per_clip(out)
    assert summary["labeled"] + summary["failed"] + summary["skipped_done"] == CLIPS
    assert len(summary["nodes_lost"]) == 1, summary
    assert summary["actor_restarts"] >= 1, summary
    assert "a Ray node was lost mid-run: " in text and "1 node(s) lost mid-run" in text, text[-3000:]
    assert sum(summary["batches_retried"].values()) >= 1, summary  # the dead actors' batches, again
    assert summary["rows_retried"] >= sum(summary["batches_retried"].values()), summary


def test_the_node_with_the_only_decoded_frames_lost_a_new_node_takes_over(cluster, many_clips, tmp_path):
    """Decode on one node, label on another (its fake GPUs hold the model actors and
    all its CPUs): killing the decode node loses the decoded frames not yet labeled and
    every decode actor, with no room left for them. The run waits; a replacement node
    joins; the actors restart there and the lost frames are decoded again (lineage)."""
    cluster.node("label", 1, gpus=2)
    cluster.node("decode", 2)
    out = tmp_path / "out"
    proc = start_run(cluster, many_clips, out, ["decode.actors=2", "decode.num_cpus=0.75", "labeler.actors=2", "labeler.num_gpus=1",
                                                "labeler.device=cpu", "run.object_store_mb=100"])
    wait_for_rows(proc, out)
    cluster.kill("decode")
    # The replacement joins only once the run says it waits for room: the lost decode
    # actors have nowhere to go until then (a fixed sleep raced the run's own check).
    deadline = time.time() + 120
    while "wait for a node with room; waiting up to" not in (tmp_path / "run.log").read_text():
        assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        assert time.time() < deadline, "the run never said it waits for a node: " + (tmp_path / "run.log").read_text()[-3000:]
        time.sleep(0.5)
    cluster.node("decode2", 2)
    summary, text = finish(proc, out)
    one_row_per_clip(out)
    assert len(summary["nodes_lost"]) == 1, summary
    assert summary["actor_restarts"] >= 1, summary  # the decode actors, on the new node
    # the lost blocks (clips read and decoded there, not yet labeled) made again from their lineage
    assert summary["batches_retried"].get("decode", 0) + summary["batches_retried"].get("read", 0) >= 1, summary


def test_lost_actors_with_no_room_stop_the_run_after_the_bounded_wait(cluster, many_clips, tmp_path):
    """The same loss with no node joining: the run says what it waits for, stops after
    run.wait_for_nodes_s with one line (exit 1), and what it committed is kept: the same
    command, once a node has joined, finishes with one row per clip."""
    cluster.node("label", 1, gpus=2)
    cluster.node("decode", 2)
    out = tmp_path / "out"
    sets = ["decode.actors=2", "decode.num_cpus=0.75", "labeler.actors=2", "labeler.num_gpus=1",
            "labeler.device=cpu", "run.object_store_mb=100", "run.wait_for_nodes_s=6"]
    proc = start_run(cluster, many_clips, out, sets)
    wait_for_rows(proc, out)
    cluster.kill("decode")
    proc.wait(timeout=120)
    text = (tmp_path / "run.log").read_text()
    assert proc.returncode == 1, text[-3000:]
    assert "found no node with room in 6 s (run.wait_for_nodes_s); the run stopped" in text, text[-3000:]
    assert 0 < len(rows_by_clip(out)) < CLIPS
    cluster.node("decode2", 2)
    summary, text = finish(start_run(cluster, many_clips, out, sets), out)
    one_row_per_clip(out)
    assert summary["skipped_done"] > 0 and summary["labeled"] + summary["skipped_done"] == CLIPS, summary
