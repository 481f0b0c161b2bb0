"""The driver's side of a run: finished batches become committed parts, each clip once.

Batches arrive from the last stage with prediction rows, failure rows and carrier rows
(the failures and counts that skipped the stages, carry.py). Predictions and failures
are built as Arrow tables from the output schemas (schema.table_of), checked against
every (clip_id, uri) this run has written (64-bit hashes in a DiskKeyMap: on local disk,
so the driver's memory stays flat however many clips a run writes), and buffered into
atomic parts (writer.py). A clip_id that names two uris in one run fails the later row;
a repeated (clip_id, uri) is written once and counted as a duplicate.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from emodist import storage
from emodist.output import carry, keys
from emodist.output.folder import FAILURES, PREDICTIONS, RunFolder
from emodist.output.ledger import CONFLICT, NEW, REPEAT, Ledger
from emodist import schema as col
from emodist.io import rows
from emodist.models.prompts import PROMPT_VERSION
from emodist.output.writer import PartWriter


@dataclass
class Counts:
    labeled: int = 0
    failed: int = 0
    skipped: int = 0  # clips of this input already done (resume)
    duplicates: int = 0
    failures_by_stage: dict[str, int] = field(default_factory=dict)
    busy_s: dict[str, float] = field(default_factory=lambda: {s: 0.0 for s in col.TIMED_STAGES})


class Committer:
    def __init__(self, output_uri: str, cfg, digest: str, run_id: str | None = None):
        self.cfg, self.digest = cfg, digest
        folder = RunFolder(output_uri, cfg)
        self.preds = PartWriter.into(folder, PREDICTIONS, run_id)
        self.fails = PartWriter.into(folder, FAILURES, self.preds.run_id)
        # Where the run's other state is, so that a killed run's keys go with the next run.
        self.seen = Ledger(seen=keys.DiskKeyMap(folder=folder.key_store()))
        self.counts = Counts()
        prompt = PROMPT_VERSION if cfg.describer.prompt is None and cfg.labeler.prompt is None else PROMPT_VERSION + "+custom"
        self.constants = {col.CONFIG_HASH: digest, col.LABEL_NAMES: list(cfg.label_names),
                          col.DEBIAS: cfg.labeler.debias, col.MODE: cfg.mode, col.PROMPT_VERSION: prompt}

    def add(self, batch: dict) -> tuple[int, int]:
        """Commit one finished batch; (labeled, failed) rows it added."""
        uris = np.asarray(batch[col.URI], dtype=object)
        if any(("@" in u or "?" in u) for u in uris):  # credentials never reach a row
            batch = {**batch, col.URI: np.array([storage.scrub(u) for u in uris], dtype=object)}
        stages = np.asarray(batch[col.ERROR_STAGE], dtype=object)
        carried_rows = stages == carry.CARRIED
        failed = (stages != "") & ~carried_rows
        constants = dict(self.constants)
        if col.FACE_RATIO not in batch:
            constants[col.FACE_RATIO] = float("nan")
        for c in (col.KEYFRAME_FACE, col.GAP_FACE, col.NO_FACE_SPANS):
            if c not in batch:
                constants[c] = None
        preds = col.table_of(col.PREDICTIONS, batch, np.flatnonzero(stages == ""), constants)
        fails = self._failures_of(batch, np.flatnonzero(failed))
        preds, conflicts = self._fresh(preds)
        self.preds.add(preds)
        self.counts.labeled += preds.num_rows
        failed_rows = self._commit_failures(fails, conflicts)
        # Carriers one at a time: a batch of carriers holds up to decode.batch_size x
        # CARRY_ROWS failed rows; unpacked together they were the driver's peak heap.
        if carried_rows.any():
            for carried, skipped, duplicates in carry.carried(batch):
                self.counts.skipped += skipped
                self.counts.duplicates += duplicates
                failed_rows += self._commit_failures(self._carried(carried))
                del carried
        for s in self.counts.busy_s:
            self.counts.busy_s[s] += float(np.sum(batch.get(f"t_{s}_s", 0.0)))
        return preds.num_rows, failed_rows

    def _commit_failures(self, fails: pa.Table, conflicts: list[pa.Table] = ()) -> int:
        """Commit the failure rows this run has not written yet, and `conflicts` (the
        prediction rows' own, already checked); how many rows it added."""
        fails, more = self._fresh(fails)
        if conflicts or more:
            fails = pa.concat_tables([fails, *conflicts, *more])
        # All that is waiting goes out as one part once part_rows wait: a carrier's 4,096
        # rows are one part, not 16 (a crash still loses at most what one batch brought).
        self.fails.add(fails, whole=True)
        if fails.num_rows:
            for stage, n in zip(*np.unique(np.asarray(fails.column(col.ERROR_STAGE).to_pylist(), dtype=object),
                                           return_counts=True)):
                self.counts.failures_by_stage[stage] = self.counts.failures_by_stage.get(stage, 0) + int(n)
        self.counts.failed += fails.num_rows
        return fails.num_rows

    def __enter__(self) -> Committer:
        return self

    def __exit__(self, *exc) -> None:
        self.seen.close()  # the run's keys: a scratch file, deleted whether the run ended or not

    def close(self) -> None:
        """Commit what is buffered; leave a schema-only part where a folder has none."""
        self.preds.flush()
        self.fails.flush()
        self.preds.ensure_one()
        self.fails.ensure_one()

    # --- rows -----------------------------------------------------------------------------

    def _failures_of(self, batch: dict, rows: np.ndarray) -> pa.Table:
        n = len(batch[col.CLIP_ID])
        attempts = np.asarray(batch[col.ATTEMPTS], np.int64) if col.ATTEMPTS in batch else np.ones(n, np.int64)
        if carry.PRIOR_ATTEMPTS in batch:
            attempts = attempts + np.asarray(batch[carry.PRIOR_ATTEMPTS], np.int64)
        return col.table_of(col.FAILURES, {**batch, col.ATTEMPTS: attempts}, rows, {col.CONFIG_HASH: self.digest})

    def _carried(self, carried: pa.Table) -> pa.Table:
        attempts = pc.add(carried.column(carry.PRIOR_ATTEMPTS), 1).cast(pa.int32())
        arrays = [carried.column(c) if c in carried.column_names else
                  attempts if c == col.ATTEMPTS else pa.array([self.digest] * carried.num_rows, pa.string())
                  for c in col.FAILURES.names]
        return pa.Table.from_arrays(arrays, schema=col.FAILURES)

    def _fresh(self, table: pa.Table) -> tuple[pa.Table, list[pa.Table]]:
        """`table` without rows whose (clip_id, uri) this run already wrote; rows whose
        clip_id this run wrote with another uri come back as failure rows."""
        if table.num_rows == 0:
            return table, []
        ids = table.column(col.CLIP_ID).to_pylist()
        uris = table.column(col.URI).to_pylist()
        verdict = self.seen.settle(keys.hashes(ids), keys.hashes(uris))
        self.counts.duplicates += int((verdict == REPEAT).sum())
        conflicts = []
        bad = np.flatnonzero(verdict == CONFLICT)
        if len(bad):
            conflicts.append(pa.Table.from_pylist([{
                col.CLIP_ID: ids[i], col.URI: uris[i], col.REF_LABEL: table.column(col.REF_LABEL)[int(i)].as_py(),
                col.ERROR_STAGE: rows.LIST_STAGE, col.ERROR_TYPE: "SourceError",
                col.ERROR_MESSAGE: (f"list: {uris[i]}: clip_id {ids[i]!r} already names another clip of this input; "
                                    f"{rows.ONE_ID_EACH}"),
                col.ATTEMPTS: 1, col.CONFIG_HASH: self.digest} for i in bad], schema=col.FAILURES))
        keep = np.flatnonzero(verdict == NEW)
        if len(keep) == table.num_rows:
            return table, conflicts
        return table.take(pa.array(keep, pa.int64())), conflicts
