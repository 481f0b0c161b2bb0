"""Helpers for tests that start Ray nodes of their own with `ray start` on 127.0.0.1."""
from __future__ import annotations

import fcntl
import json
import os
import tempfile
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(proc: subprocess.Popen, port: int, log: Path, timeout: float = 90) -> None:
    """Until something listens on the port; fails with the log's tail if the process
    exits first or the time runs out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(1)
    pytest.fail(f"ray head did not start: {log.read_text()[-2000:]}")


def cluster_env(emodist_cache: Path) -> dict:
    """The environment of a LocalCluster's nodes and of the drivers that attach to it."""
    return os.environ | {"EMODIST_CACHE": str(emodist_cache), "PATH": f"{BIN}:{os.environ['PATH']}",
                         # Ray 2.60 heads require a token (~/.ray/auth_token); nodes and drivers present it
                         "RAY_AUTH_MODE": "token",
                         # the head's GCS declares a silent node dead in ~5 s, not Ray's default ~30 s
                         # (~3 s marked live nodes dead on 2 loaded cores)
                         "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "5",
                         "RAY_health_check_timeout_ms": "1000"}


class LocalCluster:
    """A head and worker nodes on 127.0.0.1, each its own process group; stopped by
    signalling those groups (`ray stop` would kill every Ray on the machine)."""

    def __init__(self, tmp: Path, env: dict):
        self.tmp, self.env, self.procs, self.runs = tmp, env, {}, []
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # One such cluster at a time on this machine, whatever pytest worker starts it: two
        # clusters killing nodes side by side on 2 cores starved each other's heartbeats.
        self._lock = open(Path(tempfile.gettempdir()) / "emodist-tests-local-cluster.lock", "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)

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

    def head(self, cpus: int = 0) -> None:
        # the dashboard serves Ray's task events: the summary counts the retried batches from them
        self._start("head", ["--head", f"--port={self.port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                             f"--dashboard-port={free_port()}", f"--num-cpus={cpus}"])

    def node(self, name: str, cpus: int, gpus: int = 0, resources: dict | None = None) -> None:
        self._start(name, [f"--address={self.address}", f"--num-cpus={cpus}", f"--num-gpus={gpus}",
                           *([f"--resources={json.dumps(resources)}"] if resources else [])])

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
        self._lock.close()  # releases the lock
