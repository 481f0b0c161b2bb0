"""`ray job submit` against a real local head: the relabel entrypoint runs on it."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import rows_by_clip

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
         "--num-cpus=2", "--disable-usage-stats"],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", dash), timeout=1):
                break
        except OSError:
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(1)
    else:
        pytest.fail(f"ray head did not start: {log.read_text()[-2000:]}")
    yield address, env
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def test_relabel_job_via_ray_job_submit(ray_head, clips_dir, tmp_path):
    address, env = ray_head
    out = tmp_path / "out"
    runtime_env = {"excludes": [".venv", ".venv-vllm", ".git", "demo", "*.mp4"],
                   "env_vars": {"EMODIST_CACHE": env["EMODIST_CACHE"]}}
    cmd = [RAY, "job", "submit", f"--address={address}", f"--working-dir={ROOT}",
           f"--runtime-env-json={json.dumps(runtime_env)}", "--",
           sys.executable, "ray_jobs/relabel.py", "--config", "configs/tiny-vlm.yaml",
           "--input", str(clips_dir / "manifest.csv"), "--output", str(out), "--set", "mode=sparse"]
    # Ray 2.60's head requires a token; the client reads it from ~/.ray/auth_token.
    # The dashboard answers before the head's job agent has registered: Ray then refuses
    # with "No available agent ... try again later", so retry that (and only that), bounded.
    for _ in range(12):
        res = subprocess.run(cmd, env=env | {"RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=400)
        if res.returncode == 0 or "No available agent" not in res.stdout + res.stderr:
            break
        time.sleep(5)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "succeeded" in (res.stdout + res.stderr).lower()
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["labeled"], summary["failed"]) == (10, 0)
    rows = rows_by_clip(out)
    assert len(rows) == 10 and all(v == ["prediction"] for v in rows.values())
