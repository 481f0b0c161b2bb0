"""Fault injection for tests, behind one environment variable (never in the config).

With `EMODIST_FAULTS` naming a JSON file, stages and engines read it and fire the fault
it describes once: the file's `marker` is created when the fault fires, and while the
marker exists the fault does not fire again (across actors and restarts). Without the
variable (every real run) `fault()` returns at once. Set the variable before Ray starts
so that its workers inherit it; tests write and remove the file itself per case.

    {"stage": "label", "kind": "exit", "after": 1, "marker": "/tmp/x/fired"}

kinds:
- "exit": the actor process dies (Ray restarts it and retries its batches);
- "raise": the model call for one clip raises a plain error (a per-clip failure row);
- "engine_dead": the engine raises EngineDead mid-batch (a fatal error: the actor
  exits and restarts; no clip may be marked failed for it).
`after`: batches (exit) or model calls (raise, engine_dead) the stage handles first;
for stage "train" (a Ray Train worker that dies), the optimizer steps it takes first.
"""
from __future__ import annotations

import json
import logging
import os

from emodist.errors import EngineDead

ENV = "EMODIST_FAULTS"
log = logging.getLogger(__name__)


def _spec() -> dict | None:
    path = os.environ.get(ENV)
    if not path:
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fault(stage: str, kind: str, count: int) -> None:
    """Fire the configured fault if it is for `stage` and `kind` and `count` (batches or
    calls so far) has reached its `after`; at most once per marker."""
    spec = _spec()
    if not spec or spec.get("stage") != stage or spec.get("kind") != kind or count < int(spec.get("after", 0)):
        return
    marker = spec.get("marker")
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # fires once, even across actors
    except FileExistsError:
        return
    os.close(fd)
    log.warning("%s: injected fault: %s", stage, kind)
    if kind == "exit":
        os._exit(1)
    if kind == "engine_dead":
        raise EngineDead(f"{stage}: injected fault: the engine died")
    raise RuntimeError(f"{stage}: injected fault")


def active() -> bool:
    return _spec() is not None
