"""Worker nodes lost during a run (spot or preemptible nodes taken back): noticed, said
on the console, waited for (bounded) when the pools have no room left, and reported.

What survives a lost node is Ray's: the stage actors on it are restarted on a node with
room (Ray Data's pools ask for unbounded restarts and task retries; model stages for
run.max_actor_restarts), their batches in flight are retried on the restarted actors,
and blocks whose only copy was on the node (decoded frames not yet labeled) are made
again from their lineage. The driver, its lease and its committer stay on the head: a
row reaches predictions/ only once, whichever attempt made it (commit.py).
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter

log = logging.getLogger("emodist")

POLL_S = 2.0
SAY_WAITING_S = 4.0  # actors restarting for longer wait for room (a restart on a node with room takes ~1-3 s)


def alive_nodes() -> dict[str, dict]:
    import ray

    return {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}


def describe(node: dict) -> str:
    res = node.get("Resources") or {}
    shape = f"{res.get('CPU', 0):g} CPU" + (f"/{res['GPU']:g} GPU" if res.get("GPU") else "")
    return f"{node.get('NodeManagerAddress', '?')}:{node.get('NodeManagerPort', '?')} ({shape})"


class Watch:
    """Polls the cluster's nodes while a run goes on. A node that dies is said on the
    console at once; stage actors left waiting for room (no node can hold them) for more
    than `wait_s` stop the run (`gave_up` says why) instead of waiting forever."""

    def __init__(self, wait_s: float):
        import ray

        self.wait_s = wait_s
        self.job = ray.JobID.from_hex(ray.get_runtime_context().get_job_id())
        self.seen = alive_nodes()
        self.lost: dict[str, dict] = {}
        self.gave_up = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="emodist-nodes", daemon=True)

    @classmethod
    def start(cls, wait_s: float) -> Watch:
        watch = cls(wait_s)
        watch._thread.start()
        return watch

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=POLL_S + 30)  # never an interrupt after the run's loop ended

    def _poll(self) -> None:
        waiting_since = None
        while not self._stop.wait(POLL_S):
            try:
                alive = alive_nodes()
                waiting = self._waiting_actors() if self.lost else 0
            except Exception as err:  # noqa: BLE001 - the GCS busy or going: ask again
                log.debug("node poll failed: %s", err)
                continue
            for nid, node in self.seen.items():
                if nid not in alive and nid not in self.lost:
                    self.lost[nid] = node
                    log.warning("a Ray node was lost mid-run: %s; its stage actors restart on the other nodes and "
                                "its batches are retried (no clip gets a second row)", describe(node))
            self.seen.update(alive)
            if not waiting:
                waiting_since = None
                continue
            if waiting_since is None:
                waiting_since, said = time.monotonic(), False
            elif not said and time.monotonic() - waiting_since > SAY_WAITING_S:  # not a restart under way
                said = True
                log.warning("%d stage actor(s) of the lost node wait for a node with room; waiting up to %g s "
                            "(run.wait_for_nodes_s) for one to join", waiting, self.wait_s)
            if time.monotonic() - waiting_since > self.wait_s:
                if self._stop.is_set():
                    return
                self.gave_up = (f"{waiting} stage actor(s) lost with a node found no node with room in "
                                f"{self.wait_s:g} s (run.wait_for_nodes_s); the run stopped (committed rows are "
                                "kept): add a node or lower the pools' sizes, then rerun the same command to resume")
                # The driver waits inside Ray Data for batches that cannot come: the run's own SIGTERM
                # handler stops it there (pipeline.py turns it into this line).
                os.kill(os.getpid(), signal.SIGTERM)
                return

    def _actors(self) -> list[dict]:
        import ray._private.state

        return [a for a in ray._private.state.actors(job_id=self.job).values()
                if "MapWorker" in (a.get("ActorClassName") or "")]

    def _waiting_actors(self) -> int:
        return sum(1 for a in self._actors() if a["State"] in ("RESTARTING", "PENDING_CREATION"))

    def report(self, summary, batch_sizes: dict[str, int]) -> None:
        """The nodes lost, the stage actors restarted and the batches retried, into the
        summary and one console line."""
        self.stop()
        alive = alive_nodes()
        for nid, node in self.seen.items():
            if nid not in alive and nid not in self.lost:
                self.lost[nid] = node
        if not self.lost:
            return
        summary.nodes_lost = [{"node_id": nid, "address": describe(n).split(" ")[0],
                               "cpus": (n.get("Resources") or {}).get("CPU", 0),
                               "gpus": (n.get("Resources") or {}).get("GPU", 0)} for nid, n in self.lost.items()]
        try:
            summary.actor_restarts = sum(a["NumRestarts"] for a in self._actors())
        except Exception as err:  # noqa: BLE001 - the summary says what it knows
            log.debug("actor table not read: %s", err)
        summary.batches_retried = self._retried()
        # clips whose stage work was done again: at most a batch each retried batch
        summary.rows_retried = sum(n * batch_sizes.get(stage, 1) for stage, n in summary.batches_retried.items())
        retried = (f"{sum(summary.batches_retried.values())} batch(es) retried (up to {summary.rows_retried} clips' "
                   "stage work done again)" if summary.batches_retried else "the retried batches unknown (no dashboard)")
        log.warning("%d node(s) lost mid-run (%s): %d stage actor restart(s), %s; every clip still has one row",
                    len(self.lost), ", ".join(describe(n) for n in self.lost.values()), summary.actor_restarts, retried)

    def _retried(self) -> dict[str, int]:
        """Task attempts after the first, by stage (Ray's task events, read through the
        dashboard's state API; empty when the cluster runs no dashboard)."""
        import re

        try:
            from ray.util.state import list_tasks

            tasks = list_tasks(filters=[("job_id", "=", self.job.hex())], limit=10_000, timeout=30,
                               raise_on_missing_output=False)
        except Exception as err:  # noqa: BLE001 - no dashboard: not known
            log.debug("task events not read: %s", err)
            return {}
        counts: Counter = Counter()
        for t in tasks:
            if t.attempt_number > 0:
                stage = re.search(r"MapBatches\((\w+?)(?:Stage)?\)", t.name or "")
                counts[stage.group(1).lower() if stage else "read"] += 1
        return dict(counts)
