"""Helpers for tests that start Ray nodes of their own with `ray start` on 127.0.0.1."""
from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest


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
