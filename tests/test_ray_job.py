"""`ray job submit` against a real local head: the relabel entrypoint runs on it.

The head advertises 2 GPUs it does not have (`--num-gpus=2`): the shipped cluster
config's 1-GPU model actors are scheduled onto them (Ray sets CUDA_VISIBLE_DEVICES),
with the models on the CPU: a cluster's placement rehearsed on one machine."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import rows_by_clip
from tests.ray_heads import free_port, wait_for_port

pytestmark = pytest.mark.slow  # a real head and `ray job submit`: the slow tier (scripts/test.sh --all)

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory, emodist_cache):
    """A head on 127.0.0.1 (`ray start --head --block`), stopped by signalling its
    process group: `ray stop` would also kill the test session's own Ray."""
    port, dash = free_port(), free_port()
    env = os.environ | {"EMODIST_CACHE": str(emodist_cache), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    log = tmp_path_factory.mktemp("head") / "head.log"
    proc = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true",
         # Every Ray node runs agents on fixed default ports (52365, ...); the session's
         # own local Ray holds them, so this head's agents get free ports of their own.
         *(f"--{flag}={free_port()}" for flag in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                   "runtime-env-agent-port", "metrics-export-port")),
         "--num-cpus=2", "--num-gpus=2", "--disable-usage-stats"],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dash}"
    wait_for_port(proc, dash, log)
    yield address, env
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=8)  # `ray start --block` may linger on SIGTERM; the group is killed then
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


# configs/cluster-msce.yaml scaled to this machine: the same stages and pools (1-GPU model
# actors, one engine for both MSCE stages), fewer and smaller, the tiny VLM on the CPU.
SCALED_DOWN = ["describer.backend=transformers", "labeler.backend=transformers",
               "describer.model=builtin:tiny-vlm", "labeler.model=builtin:tiny-vlm",
               "describer.device=cpu", "labeler.device=cpu", "labeler.actors=2", "labeler.num_cpus=0.5",
               "labeler.batch_size=2", "decode.actors=1", "decode.num_cpus=0.5", "decode.batch_size=2",
               "decode.width=224", "decode.height=224", "storage.region=null",
               # this head is the whole cluster: not the 16 nodes cluster.yaml grows to
               "run.max_nodes=null"]


def submit(ray_head, out: Path, clips_dir: Path, overrides: list[str]) -> subprocess.CompletedProcess:
    address, env = ray_head
    runtime_env = {"excludes": [".venv", ".venv-vllm", ".git", "demo", "*.mp4"],
                   "env_vars": {"EMODIST_CACHE": env["EMODIST_CACHE"]}}
    sets = [a for o in overrides for a in ("--set", o)]
    cmd = [RAY, "job", "submit", f"--address={address}", f"--working-dir={ROOT}",
           f"--runtime-env-json={json.dumps(runtime_env)}", "--",
           sys.executable, "ray_jobs/relabel.py", "--config", "configs/cluster-msce.yaml",
           "--input", str(clips_dir / "manifest.csv"), "--output", str(out), *sets]
    # Ray 2.60's head requires a token; the client reads it from ~/.ray/auth_token.
    # The dashboard answers before the head's job agent has registered: Ray then refuses
    # with "No available agent ... try again later", so retry that (and only that), bounded.
    for _ in range(12):
        res = subprocess.run(cmd, env=env | {"RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=400)
        if res.returncode == 0 or "No available agent" not in res.stdout + res.stderr:
            return res
        time.sleep(5)
    return res


def test_the_cluster_config_runs_as_a_submitted_job_on_fake_gpus(ray_head, clips_dir, tmp_path):
    out = tmp_path / "out"
    res = submit(ray_head, out, clips_dir, SCALED_DOWN)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "succeeded" in (res.stdout + res.stderr).lower()
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["labeled"], summary["failed"]) == (10, 0)
    rows = rows_by_clip(out)
    assert len(rows) == 10 and all(v == ["prediction"] for v in rows.values())


def test_a_pool_the_cluster_cannot_hold_is_refused_at_start(ray_head, clips_dir, tmp_path):
    """3 one-GPU model actors on 2 GPUs: refused in seconds with the numbers, not left
    waiting for a GPU that never comes."""
    start = time.time()
    res = submit(ray_head, tmp_path / "out", clips_dir, SCALED_DOWN + ["labeler.actors=3"])
    text = res.stdout + res.stderr
    assert res.returncode != 0, text[-3000:]
    assert "error: cannot place the stage pools on this Ray cluster" in text
    assert "3 GPUs asked in all, the cluster has 2" in text and "nodes (the nodes alive): 1 x 2 CPU/2 GPU" in text
    assert "labeler: 3 x (0.5 CPU + 1 GPU)" in text and "lower" in text
    assert time.time() - start < 120
    assert not (tmp_path / "out" / "predictions").exists()


def test_a_pool_that_fits_the_clusters_maximum_is_waited_for_then_refused(ray_head, clips_dir, tmp_path):
    """The same 3 GPU actors on a cluster said to grow by a 1-GPU node (run.max_nodes):
    not refused at once; the start asks the autoscaler, says what it waits for, and stops
    after run.wait_for_nodes_s when the node never joins (this head has no autoscaler)."""
    grows = "run.max_nodes=[{cpus: 2, gpus: 2, count: 1}, {cpus: 1, gpus: 1, count: 1}]"
    res = submit(ray_head, tmp_path / "out", clips_dir,
                 SCALED_DOWN + ["labeler.actors=3", grows, "run.wait_for_nodes_s=8"])
    text = res.stdout + res.stderr
    assert res.returncode != 0, text[-3000:]
    assert "waiting up to 8 s for the cluster to grow to hold the stage pools" in text
    assert "the pools need" in text and "1 x 2 CPU/2 GPU, 1 x 1 CPU/1 GPU (run.max_nodes)" in text
    assert "error: the cluster did not grow to hold the stage pools in 8 s (run.wait_for_nodes_s)" in text
    assert not (tmp_path / "out" / "predictions").exists()
