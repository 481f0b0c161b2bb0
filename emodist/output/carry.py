"""Carrier rows: the clips that already failed (and the counts of those skipped) travel
to the driver packed into one row per block, so they do not pay for the stages they
skip: a block of 4,000 missing files is one row through decode and the model stage, not
4,000 (the row path at scale, benchmarks/rows.py).

A carrier row has `error_stage = "carried"`, the failed rows as one Arrow IPC stream in
its `carried` column, and in `error_message` the counts it carries (clips skipped as
already done, duplicates dropped). Every stage passes carrier rows through untouched
(they are not ok rows); the driver unpacks them into failure rows, one carrier at a time.

The stream is zstd-compressed: failed rows repeat the same long messages, so a carrier
of 4,096 missing files is ~90 KB instead of ~1.4 MB. That is what the object store holds
for them at each stage and what the driver reads (benchmarks/rows.py: the driver's RSS
counts every object-store page it has read, so it grew with the failed rows of a run).
"""
from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from emodist import schema as col

CARRIED = "carried"  # the error_stage of a carrier row
COLUMN = "carried"  # the column holding a carrier's failed rows
PRIOR_ATTEMPTS = "prior_attempts"  # attempts before this run (retries), carried with the rows

FAILED_ROWS = pa.schema([
    (col.CLIP_ID, pa.string()), (col.URI, pa.string()), (col.REF_LABEL, pa.string()),
    (col.ERROR_STAGE, pa.string()), (col.ERROR_TYPE, pa.string()), (col.ERROR_MESSAGE, pa.string()),
    (PRIOR_ATTEMPTS, pa.int64()),
])


_CODEC = "zstd" if pa.Codec.is_available("zstd") else None


def to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression=_CODEC)) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    """A carrier's rows (compressed or not: the stream says which)."""
    return pa.ipc.open_stream(pa.BufferReader(data)).read_all()


def counts_text(skipped: int = 0, duplicates: int = 0) -> str:
    return json.dumps({"skipped": int(skipped), "duplicates": int(duplicates)})


def carrier(failed: list[dict], skipped: int = 0, duplicates: int = 0, template: dict | None = None) -> dict:
    """One carrier row (a dict of the read task's row columns) for `failed` rows."""
    table = pa.Table.from_pylist([{k: r.get(k, 0 if k == PRIOR_ATTEMPTS else "") for k in FAILED_ROWS.names}
                                  for r in failed], schema=FAILED_ROWS)
    row = dict(template or {})
    row.update({col.CLIP_ID: "", col.URI: "", col.REF_LABEL: "", col.ERROR_STAGE: CARRIED, col.ERROR_TYPE: "",
                col.ERROR_MESSAGE: counts_text(skipped, duplicates), COLUMN: to_ipc(table)})
    return row


def _text(batch: dict, column: str, i: int) -> str | None:
    """Row i's value of `column` as text; None where the batch lacks it or holds None."""
    v = batch[column][i] if column in batch else None
    return None if v is None else str(v)


def pack_failed(batch: dict, stage: str) -> dict:
    """A numpy batch whose rows that failed in `stage` are replaced by one carrier row
    (the first failed row's slot, so that every other column keeps a valid value)."""
    failed = np.flatnonzero(np.asarray(batch[col.ERROR_STAGE], dtype=object) == stage)
    n = len(batch[col.CLIP_ID])
    if COLUMN not in batch:
        batch[COLUMN] = np.full(n, None, dtype=object)
    if len(failed) == 0:
        return batch
    prior = np.asarray(batch[PRIOR_ATTEMPTS], np.int64) if PRIOR_ATTEMPTS in batch else np.zeros(n, np.int64)
    table = pa.Table.from_arrays(
        [pa.array([_text(batch, c, i) for i in failed], pa.string()) for c in FAILED_ROWS.names[:-1]]
        + [pa.array(prior[failed], pa.int64())], schema=FAILED_ROWS)
    slot = int(failed[0])
    keep = np.ones(n, dtype=bool)
    keep[failed[1:]] = False
    out = {k: v[keep] for k, v in batch.items()}
    at = int(np.flatnonzero(np.flatnonzero(keep) == slot)[0])
    for c, v in ((col.CLIP_ID, ""), (col.URI, ""), (col.REF_LABEL, ""), (col.ERROR_STAGE, CARRIED),
                 (col.ERROR_TYPE, ""), (col.ERROR_MESSAGE, counts_text())):
        if c in out:
            out[c] = out[c].astype(object)
            out[c][at] = v
    out[COLUMN] = out[COLUMN].astype(object)
    out[COLUMN][at] = to_ipc(table)
    return out


def carried(batch: dict) -> Iterator[tuple[pa.Table, int, int]]:
    """(failed rows, skipped, duplicates) of each carrier row in a finished batch, one
    carrier at a time: the driver holds one carrier's rows unpacked, not a batch's."""
    stages = np.asarray(batch[col.ERROR_STAGE], dtype=object)
    for i in np.flatnonzero(stages == CARRIED):
        counts = json.loads(batch[col.ERROR_MESSAGE][i] or "{}")
        data = batch[COLUMN][i] if COLUMN in batch else None
        table = from_ipc(bytes(data)) if data is not None and len(data) else FAILED_ROWS.empty_table()
        yield table, counts.get("skipped", 0), counts.get("duplicates", 0)


def unpack(batch: dict) -> tuple[pa.Table, int, int]:
    """(failed rows, skipped, duplicates) of every carrier row in a finished batch."""
    tables, skipped, duplicates = [], 0, 0
    for table, s, d in carried(batch):
        tables.append(table)
        skipped += s
        duplicates += d
    table = pa.concat_tables(tables) if tables else FAILED_ROWS.empty_table()
    return table, skipped, duplicates
