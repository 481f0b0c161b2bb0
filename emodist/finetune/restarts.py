"""A finetune that loses a node (a spot instance taken back) or a training worker goes
on: Ray Train restarts the workers on a node with room, up to finetune.max_failures
times, and each start resumes from the run's last checkpoint (train.train_loop). This
module keeps the record of those starts and says each restart in one console line.

    OUT/train_starts.jsonl   one line each time the training workers started (rank 0):
                             the epoch and step they went on from, or from the beginning

What does not survive: the epoch in progress (its steps are trained again from the last
epoch's checkpoint), and a run whose workers fail more than finetune.max_failures times.
"""
from __future__ import annotations

import json
import logging
import posixpath
import threading
import time

from emodist import nodes, storage
from emodist.config import Config

log = logging.getLogger(__name__)

STARTS = "train_starts.jsonl"
POLL_S = 2.0


def record_start(output_uri: str, cfg: Config, epoch: int, step: int) -> None:
    """A line in OUT/train_starts.jsonl: the workers start at `epoch` with `step` steps
    done (epoch 0, step 0: from the beginning)."""
    fs, root = storage.filesystem(output_uri, cfg)
    path = posixpath.join(root, STARTS)
    text = fs.cat_file(path).decode() if fs.exists(path) else ""
    line = {"epoch": epoch, "step": step, "resumed_from_epoch": epoch - 1 if epoch else None, "time": time.time()}
    tmp = path + ".tmp"
    fs.pipe_file(tmp, (text + json.dumps(line) + "\n").encode())
    fs.mv(tmp, path)


def read_starts(output_uri: str, cfg: Config) -> list[dict]:
    fs, root = storage.filesystem(output_uri, cfg)
    path = posixpath.join(root, STARTS)
    if not fs.exists(path):
        return []
    return [json.loads(s) for s in fs.cat_file(path).decode().splitlines() if s.strip()]


def _resumed(start: dict) -> str:
    if start["resumed_from_epoch"] is None:
        return "training started again from the first epoch (no checkpoint yet)"
    return (f"training resumed after epoch {start['resumed_from_epoch']} (step {start['step']}) "
            "from its checkpoint")


class Watch:
    """In the driver while Ray Train's fit() runs: polls the cluster's nodes and OUT's
    start records. Every start after the first in this fit is a restart by Ray Train;
    each is said once, with the nodes lost since the last one (if any)."""

    def __init__(self, output_uri: str, cfg: Config):
        self.output_uri, self.cfg = output_uri, cfg
        self.before = len(read_starts(output_uri, cfg))  # those of runs before this one (a killed driver's)
        self.seen = nodes.alive_nodes()
        self.lost: dict[str, dict] = {}
        self.restarts: list[dict] = []
        self._unsaid: list[str] = []  # nodes lost, not yet said with a restart
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emodist-train-nodes", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            self._poll()

    def _poll(self) -> None:
        try:
            alive = nodes.alive_nodes()
            starts = read_starts(self.output_uri, self.cfg)[self.before:]
        except Exception as err:  # noqa: BLE001 - the GCS or the storage busy: ask again
            log.debug("restart poll failed: %s", err)
            return
        for nid, node in self.seen.items():
            if nid not in alive and nid not in self.lost:
                self.lost[nid] = node
                self._unsaid.append(nodes.describe(node))
        self.seen.update(alive)
        for start in starts[1 + len(self.restarts):]:
            lost, self._unsaid = self._unsaid, []
            self.restarts.append({"resumed_from_epoch": start["resumed_from_epoch"], "resumed_from_step": start["step"],
                                  "nodes_lost": [d.split(" ")[0] for d in lost]})
            what = (f"a Ray node was lost mid-training: {', '.join(lost)}" if lost else
                    "the training workers failed (Ray's log says why)")
            limit = self.cfg.finetune.max_failures
            log.warning("%s; Ray Train restarted the training workers (restart %d of finetune.max_failures=%s) and %s",
                        what, len(self.restarts), "no limit" if limit == -1 else limit, _resumed(start))

    def stop(self) -> None:
        """The last poll (a restart the thread had no time to see) and the thread ended."""
        self._stop.set()
        self._thread.join(timeout=POLL_S + 30)
        self._poll()
