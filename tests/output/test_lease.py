"""One run at a time per output: the lease, locally and on S3."""
import json
import os
import subprocess
import sys
import time

import pytest

from emodist.config import load_config
from emodist.output.lease import LEASE, Lease, LeaseHeld


def test_a_live_holder_is_refused_with_its_host_pid_and_start(tmp_path):
    cfg = load_config()
    with Lease(str(tmp_path), cfg, run_id="first"):
        with pytest.raises(LeaseHeld) as err:
            Lease(str(tmp_path), cfg, run_id="second").acquire()
        msg = str(err.value)
        assert f"pid {os.getpid()}" in msg and "host " in msg and "started " in msg and "run first" in msg
    assert not (tmp_path / LEASE).exists()  # given back
    with Lease(str(tmp_path), cfg, run_id="third"):
        assert json.loads((tmp_path / LEASE).read_text())["run_id"] == "third"


def test_a_dead_holder_or_an_old_heartbeat_is_taken_over(tmp_path):
    cfg = load_config(None, ["run.lease_timeout_s=60"])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "_emodist").mkdir()
    import socket

    (tmp_path / LEASE).write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout),
                                              "run_id": "dead", "started": 0, "heartbeat": time.time()}))
    with Lease(str(tmp_path), cfg, run_id="alive"):
        assert json.loads((tmp_path / LEASE).read_text())["run_id"] == "alive"
    (tmp_path / LEASE).write_text(json.dumps({"host": "another-host", "pid": 1, "run_id": "far",
                                              "started": 0, "heartbeat": time.time() - 3600}))
    with Lease(str(tmp_path), cfg, run_id="alive2"):
        assert json.loads((tmp_path / LEASE).read_text())["run_id"] == "alive2"
    (tmp_path / LEASE).write_text(json.dumps({"host": "another-host", "pid": 1, "run_id": "far",
                                              "started": 0, "heartbeat": time.time()}))
    with pytest.raises(LeaseHeld, match="host another-host, pid 1"):
        Lease(str(tmp_path), cfg).acquire()


def test_on_s3_the_lease_is_a_conditional_write(s3):
    """SeaweedFS honours If-None-Match and If-Match: a second taker is refused."""
    from tests.conftest_s3 import OUT_BUCKET

    cfg = s3.config()
    out = f"s3://{OUT_BUCKET}/lease-test"
    first = Lease(out, cfg, run_id="one").acquire()
    try:
        with pytest.raises(LeaseHeld, match="run one"):
            Lease(out, cfg, run_id="two").acquire()
        assert first.etag
    finally:
        first.release()
    assert not s3.admin.exists(f"{OUT_BUCKET}/lease-test/{LEASE}")
    with Lease(out, cfg, run_id="three"):
        assert json.loads(s3.admin.cat_file(f"{OUT_BUCKET}/lease-test/{LEASE}"))["run_id"] == "three"
