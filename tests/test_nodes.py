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
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import rows_by_clip
from tests.ray_heads import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLIPS = 60

pytestmark = pytest.mark.slow


class LocalCluster:
    """A head and worker nodes on 127.0.0.1, each its own process group; stopped by
    signalling those groups (`ray stop` would kill every Ray on the machine)."""

    def __init__(self, tmp: Path, env: dict):
        self.tmp, self.env, self.procs, self.runs = tmp, env, {}, []
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"

    def _start(self, name: str, args: list[str]) -> None:
        log = self.tmp / f"{name}.log"
        # Every node runs agents on fixed default ports; each gets free ones of its own.
        ports = [f"--{flag}={free_port()}" for flag in (
            "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
            "metrics-export-port", "node-manager-port", "object-manager-port")]
        proc = subprocess.Popen([str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", *ports,
                                 "--object-store-memory=200000000", "--disable-usage-stats", *args],
                                env=self.env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        deadline = time.time() + 90
        while "Ray runtime started" not in log.read_text():
            assert proc.poll() is None and time.time() < deadline, f"{name} did not start: {log.read_text()[-2000:]}"
            time.sleep(0.5)

    def head(self) -> None:
        # the dashboard serves Ray's task events: the summary counts the retried batches from them
        self._start("head", ["--head", f"--port={self.port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                             f"--dashboard-port={free_port()}", "--num-cpus=0"])

    def node(self, name: str, cpus: int, gpus: int = 0) -> None:
        self._start(name, [f"--address={self.address}", f"--num-cpus={cpus}", f"--num-gpus={gpus}"])

    def _tree(self, name: str) -> list[tuple[int, str]]:
        """(pid, command) of the node's processes: its process group and what the raylet
        started (workers may move to groups of their own)."""
        rows = [line.split(None, 3) for line in
                subprocess.run(["ps", "-eo", "pid=,ppid=,pgid=,args="], capture_output=True, text=True).stdout.splitlines()]
        rows = [(int(p), int(pp), int(g), a) for p, pp, g, *rest in rows for a in [rest[0] if rest else ""]]
        pgid = self.procs[name].pid
        mine = {p for p, _, g, _ in rows if g == pgid}
        grew = True
        while grew:
            found = {p for p, pp, _, _ in rows if pp in mine} - mine
            mine |= found
            grew = bool(found)
        return [(p, a) for p, _, _, a in rows if p in mine]

    def actors_on(self, name: str) -> int:
        """Stage actors (Ray Data's map workers) running on the node."""
        return sum(1 for _, args in self._tree(name) if "MapWorker" in args)

    def kill(self, name: str) -> None:
        """SIGKILL to the node's raylet, object store and every worker under it at once."""
        tree = self._tree(name)
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        for pid, _ in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.procs.pop(name).wait()

    def stop(self, name: str) -> None:
        tree, proc = self._tree(name), self.procs.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid, _ in tree:  # workers in groups of their own, if any outlived their raylet
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)


@pytest.fixture(scope="module")
def head(tmp_path_factory, emodist_cache):
    env = os.environ | {"EMODIST_CACHE": str(emodist_cache), "PATH": f"{BIN}:{os.environ['PATH']}",
                        # Ray 2.60 heads require a token (~/.ray/auth_token); nodes and drivers present it
                        "RAY_AUTH_MODE": "token",
                        # the head's GCS declares a silent node dead in ~3 s, not Ray's default ~30 s
                        "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
                        "RAY_health_check_timeout_ms": "1000"}
    c = LocalCluster(tmp_path_factory.mktemp("cluster"), env)
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
