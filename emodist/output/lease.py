"""One run at a time per output: a lease file, `OUT/_emodist/lease.json`.

A run takes the lease before it starts work and gives it back at the end. A second run
into an output whose lease a live run holds is refused at once, naming the holder's
host, pid and start time. A stale lease is taken over: its holder is a process of this
host that no longer exists, or its heartbeat (refreshed every HEARTBEAT_S by the holder)
is older than `run.lease_timeout_s`.

Taking and refreshing are conditional writes, so two runs can never both hold it:
locally an exclusive create (O_EXCL); on S3 `If-None-Match: *` to create and `If-Match:
<etag>` to refresh or take over (S3 and SeaweedFS honour both; a store that ignores
them is as safe as a last-writer-wins store can be, and the heartbeat check below then
stops the run that lost).
"""
from __future__ import annotations

import json
import logging
import os
import posixpath
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass

from emodist import storage
from emodist.output.folder import LEASE, STATE

log = logging.getLogger(__name__)
HEARTBEAT_S = 30.0


class LeaseHeld(storage.SourceError):
    """Another live run holds the output."""


@dataclass
class Holder:
    host: str
    pid: int
    run_id: str
    started: float
    heartbeat: float

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(self.started))
        return f"host {self.host}, pid {self.pid}, started {started} (run {self.run_id})"

    def alive_here(self) -> bool | None:
        """Whether the holder process lives (None: it runs on another host)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _precondition_failed(exc: BaseException) -> bool:
    if isinstance(exc, FileExistsError):
        return True
    cause = exc.__cause__ or exc.__context__
    code = getattr(cause, "response", {}).get("Error", {}).get("Code") if cause is not None else None
    return code in ("PreconditionFailed", "412") or "pre-conditions you specified did not hold" in str(exc)


class Lease:
    def __init__(self, output_uri: str, cfg, run_id: str | None = None):
        self.uri = output_uri.rstrip("/") + "/" + LEASE
        self.fs, self.path = storage.filesystem(self.uri, cfg)
        self.local = storage.is_local(self.uri)
        self.timeout_s = cfg.run.lease_timeout_s
        now = time.time()
        self.me = Holder(socket.gethostname(), os.getpid(), run_id or uuid.uuid4().hex[:8], now, now)
        self.etag: str | None = None
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- taking and giving back ---------------------------------------------------------

    def acquire(self) -> Lease:
        self.fs.makedirs(posixpath.dirname(self.path), exist_ok=True)
        for _ in range(3):
            if self._create():
                break
            holder, etag = self._read()
            if holder is None:
                continue  # given back meanwhile: try again
            why = self._stale(holder)
            if why is None:
                raise LeaseHeld(
                    f"{self.uri.rsplit('/' + STATE, 1)[0]}: another run is writing this output "
                    f"({holder.describe()}); wait for it to finish, or write to another --output "
                    f"(a holder that died is taken over after run.lease_timeout_s = {self.timeout_s:g} s)")
            log.warning("taking over the lease of a stale run (%s): %s", holder.describe(), why)
            if self._replace(etag):
                break
        else:
            raise LeaseHeld(f"{self.uri}: could not take the output's lease (another run took it first)")
        self._thread = threading.Thread(target=self._beat, name="emodist-lease", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        holder, _ = self._read()
        if holder is not None and holder.run_id == self.me.run_id:
            try:
                self.fs.rm_file(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # --- the file -------------------------------------------------------------------------

    def _body(self) -> bytes:
        return json.dumps(asdict(self.me)).encode()

    def _create(self) -> bool:
        try:
            if self.local:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                with os.fdopen(fd, "wb") as f:
                    f.write(self._body())
            else:
                self.fs.pipe_file(self.path, self._body(), IfNoneMatch="*")
                self.etag = self._etag()
            return True
        except Exception as exc:  # noqa: BLE001 - sorted below
            if _precondition_failed(exc):
                return False
            raise storage.explain(exc, self.uri, "writing to") from None

    def _replace(self, etag: str | None) -> bool:
        """Take over a stale lease: locally remove it and create ours (one of two
        takers wins the exclusive create); on S3 a write conditional on its etag."""
        if self.local:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            return self._create()
        try:
            self.fs.pipe_file(self.path, self._body(), IfMatch=etag)
        except Exception as exc:  # noqa: BLE001
            if _precondition_failed(exc):
                return False
            raise storage.explain(exc, self.uri, "writing to") from None
        self.etag = self._etag()
        return True

    def _read(self) -> tuple[Holder | None, str | None]:
        try:
            data = self.fs.cat_file(self.path)
            etag = None if self.local else self._etag()
        except FileNotFoundError:
            return None, None
        try:
            return Holder(**json.loads(data)), etag
        except (ValueError, TypeError):  # a torn or foreign file: treat as stale
            return Holder("?", -1, "?", 0.0, 0.0), etag

    def _etag(self) -> str | None:
        self.fs.invalidate_cache(self.path)
        return self.fs.info(self.path).get("ETag")

    def _stale(self, holder: Holder) -> str | None:
        """Why `holder`'s lease may be taken over, or None while it is live."""
        if holder.alive_here() is False:
            return f"process {holder.pid} no longer runs on this host"
        age = time.time() - holder.heartbeat
        if age > self.timeout_s:
            return f"no heartbeat for {age:.0f} s (run.lease_timeout_s = {self.timeout_s:g})"
        return None

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.me.heartbeat = time.time()
            try:
                if self.local:
                    holder, _ = self._read()
                    if holder is None or holder.run_id != self.me.run_id:
                        raise LeaseHeld("lease lost")
                    tmp = self.path + f".{self.me.run_id}.tmp"
                    with open(tmp, "wb") as f:
                        f.write(self._body())
                    os.replace(tmp, self.path)
                else:
                    self.fs.pipe_file(self.path, self._body(), IfMatch=self.etag)
                    self.etag = self._etag()
            except Exception as exc:  # noqa: BLE001 - the run checks `lost`
                log.error("the output's lease was lost (%s); this run stops", exc)
                self.lost.set()
                return
