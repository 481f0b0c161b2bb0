"""Carrier rows: a batch's failed rows packed into one row that every stage passes on, and
unpacked by the driver with the counts they carry."""
import numpy as np

from emodist import schema as col
from emodist.io import rows
from emodist.output import carry


def _batch(n_failed: int, n_ok: int) -> dict:
    rs = [rows.fail(f"f{i}", f"/v/f{i}.mp4", "not found: the manifest names this file") for i in range(n_failed)]
    rs += [rows.ok(f"k{i}", f"/v/k{i}.mp4") for i in range(n_ok)]
    rs = rs[::2] + rs[1::2]  # failed rows among the others
    return {c: np.array([r.get(c) for r in rs], dtype=object) for c in rs[0]}


def test_failed_rows_become_one_carrier_in_the_first_failed_slot_and_come_back_whole():
    batch = _batch(5, 3)
    batch[carry.PRIOR_ATTEMPTS] = np.arange(8, dtype=np.int64)
    first_failed = int(np.flatnonzero(batch[col.ERROR_STAGE] == rows.LIST_STAGE)[0])
    packed = carry.pack_failed(batch, rows.LIST_STAGE)
    stages = packed[col.ERROR_STAGE].tolist()
    assert len(stages) == 4 and stages.count(carry.CARRIED) == 1 and stages.count("") == 3
    assert stages.index(carry.CARRIED) == first_failed
    [(table, skipped, duplicates)] = list(carry.carried(packed))
    assert sorted(table.column(col.CLIP_ID).to_pylist()) == [f"f{i}" for i in range(5)]
    assert (skipped, duplicates) == (0, 0)
    # prior attempts travel with their rows
    want = {batch[col.CLIP_ID][i]: i for i in range(8) if batch[col.ERROR_STAGE][i]}
    assert dict(zip(table.column(col.CLIP_ID).to_pylist(), table.column(carry.PRIOR_ATTEMPTS).to_pylist())) == want


def test_a_batch_without_failures_is_unchanged_and_counts_ride_a_carrier():
    batch = _batch(0, 3)
    packed = carry.pack_failed(dict(batch), rows.LIST_STAGE)
    assert packed[col.CLIP_ID].tolist() == batch[col.CLIP_ID].tolist()
    assert carry.unpack(packed)[1:] == (0, 0)
    row = carry.carrier([], skipped=7, duplicates=2, template=rows.ok("", ""))
    one = {k: np.array([v], dtype=object) for k, v in row.items()}
    table, skipped, duplicates = carry.unpack(one)
    assert table.num_rows == 0 and (skipped, duplicates) == (7, 2)


def test_the_stream_is_compressed_repeated_messages_cost_little():
    failed = [rows.fail(f"f{i}", f"/data/set/f{i:06d}.mp4", "not found: the manifest names this file but it does "
                        "not exist; check the path, or restore the clip") for i in range(4096)]
    packed = carry.carrier(failed)[carry.COLUMN]
    plain = sum(len(r[col.ERROR_MESSAGE]) + len(r[col.URI]) for r in failed)
    assert len(packed) < plain / 5
    assert carry.from_ipc(packed).num_rows == 4096
