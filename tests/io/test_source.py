"""An input's rows as read tasks give them (io/source.py): blocks of one decode batch,
listings running ahead of the decoders; clips done before the run skipped, repeats
dropped, conflicting ids failed, as the ledger says; failed rows carried."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emodist import schema as col
from emodist.config import load_config
from emodist.io import rows
from emodist.io.source import open_source
from emodist.io.source import read_blocks
from emodist.output import carry, keys


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def _clips_and_carried(blocks):
    """(clip rows to decode, failed rows carried, skipped, duplicates) of read_blocks' blocks."""
    clips, failed, skipped, duplicates = [], [], 0, 0
    for b in blocks:
        d = b.to_pylist()
        clips += [r for r in d if r[col.ERROR_STAGE] != carry.CARRIED]
        batch = {c: np.array(b.column(c).to_pylist(), dtype=object) for c in b.column_names}
        t, s, n = carry.unpack(batch)
        failed += t.to_pylist()
        skipped += s
        duplicates += n
    return clips, failed, skipped, duplicates


def test_done_clips_are_skipped_repeats_dropped_and_a_conflicting_id_fails_naming_both_lines():
    given = [rows.ok("a", "/v/a.mp4", line=2), rows.ok("b", "/v/b.mp4", line=3), rows.ok("a", "/v/a.mp4", line=4),
             rows.ok("c", "/v/c.mp4", line=5), rows.ok("c", "/w/c.mp4", line=6), rows.ok("b", "/v/b.mp4", line=7),
             rows.fail("d", "/v/d.mp4", "unreadable line")]
    done = keys.sorted_unique([keys.clip_keys(["b"], ["/v/b.mp4"])])
    blocks = list(read_blocks(iter(given), 2, done))
    clips, failed, skipped, duplicates = _clips_and_carried(blocks)
    assert [r[col.CLIP_ID] for r in clips] == ["a", "c"]
    # the repeat of a done clip is a duplicate, not a second skip
    assert skipped == 1 and duplicates == 2
    msgs = {r[col.CLIP_ID]: r[col.ERROR_MESSAGE] for r in failed}
    assert set(msgs) == {"c", "d"}
    assert "line 6: clip_id 'c' already names another clip (line 5: /v/c.mp4)" in msgs["c"]
    assert all(b.num_rows <= 3 for b in blocks)  # 2 clips and at most one carrier


def test_blocks_hold_one_decode_batch_and_an_input_of_failures_is_carried_not_decoded(tmp_path):
    given = [rows.ok(f"k{i}", str(tmp_path / f"k{i}.mp4")) for i in range(7)]
    for r in given[:5]:
        touch(tmp_path / f"{r[col.CLIP_ID]}.mp4")
    blocks = list(read_blocks(iter(given), 2, check_local=True))
    clips, failed, skipped, duplicates = _clips_and_carried(blocks)
    assert [len([r for r in b.to_pylist() if r[col.ERROR_STAGE] != carry.CARRIED]) for b in blocks][:2] == [2, 2]
    assert [r[col.CLIP_ID] for r in clips] == [f"k{i}" for i in range(5)]
    assert sorted(r[col.CLIP_ID] for r in failed) == ["k5", "k6"]
    assert all("does not exist" in r[col.ERROR_MESSAGE] for r in failed)
    assert (skipped, duplicates) == (0, 0)


def test_a_task_with_no_rows_still_gives_one_block_and_state_is_per_task():
    """Each call has its own ledger: the same rows read by two tasks are clips in both
    (the driver's commit settles repeats across tasks)."""
    assert [b.num_rows for b in read_blocks(iter([]), 4)] == [0]
    given = [rows.ok("a", "/v/a.mp4"), rows.ok("b", "/v/b.mp4")]
    for _ in range(2):
        clips, failed, _, duplicates = _clips_and_carried(read_blocks(iter(given), 4))
        assert [r[col.CLIP_ID] for r in clips] == ["a", "b"] and not failed and duplicates == 0


def test_listing_and_manifest_reads_run_ahead_of_the_decoders_but_shards_do_not(tmp_path, ray_local):
    """Ray Data lets a streaming read task hold 2 blocks by default; the decode pool then
    got one batch per turn of Ray's executor loop and sat idle half the time. Listing and
    manifest rows are tiny, so their reads may run far ahead; shards carry clip bytes.
    The setting rides on a deprecated Ray argument: a Ray upgrade that drops it fails here."""
    from emodist.io.source import LISTING_AHEAD_BLOCKS

    touch(tmp_path / "clips" / "a.mp4")
    (tmp_path / "m.jsonl").write_text('{"uri": "x.mp4"}\n')
    touch(tmp_path / "shards" / "a-000.tar")
    for rel, ahead in (("clips", 2 * LISTING_AHEAD_BLOCKS), ("m.jsonl", 2 * LISTING_AHEAD_BLOCKS),
                       ("shards", None)):
        read = open_source(str(tmp_path / rel)).dataset()._logical_plan.dag
        assert type(read).__name__ == "Read", rel
        assert read.ray_remote_args.get("_generator_backpressure_num_objects") == ahead, rel


@pytest.mark.parametrize("fmt", ["folder", "csv", "jsonl", "parquet"])
def test_every_input_format_reaches_ray_in_blocks_of_one_decode_batch(tmp_path, ray_local, fmt):
    """An actor pool hands out whole blocks: a manifest read as one block (what
    ray.data.read_parquet gives for one row group) would be decoded by one actor alone."""

    uris = [str(touch(tmp_path / "clips" / f"c{i:02d}.mp4")) for i in range(37)]
    src = {"folder": tmp_path / "clips", "csv": tmp_path / "m.csv", "jsonl": tmp_path / "m.jsonl",
           "parquet": tmp_path / "m.parquet"}[fmt]
    if fmt == "csv":
        src.write_text("uri\n" + "".join(f"{u}\n" for u in uris))
    elif fmt == "jsonl":
        src.write_text("".join(json.dumps({"uri": u}) + "\n" for u in uris))
    elif fmt == "parquet":
        pq.write_table(pa.table({"uri": uris}), src)
    ds = open_source(str(src), load_config(None, ["decode.batch_size=4"])).dataset().materialize()
    blocks = [m.num_rows for bundle in ds.iter_internal_ref_bundles() for m in bundle.metadata]
    assert sum(blocks) == 37 and max(blocks) <= 4, blocks


def test_the_id_check_names_both_lines_of_an_id_given_to_two_clips_across_files():
    from emodist.io.source import id_conflicts

    a = [rows.ok("x", "/v/x.mp4", line=2), rows.ok("y", "/v/y.mp4", line=3), rows.ok("x", "/v/x.mp4", line=4)]
    b = [rows.ok("y", "/w/y.mp4", line=2), rows.fail("z", "/v/z.mp4", "unparsable")]
    found = id_conflicts([(lambda: iter(a), "/m/a.csv"), (lambda: iter(b), "/m/b.csv")])
    # a repeated line is no conflict; the same id for another uri in another file is
    assert found == ["'y' is on a.csv line 3 (/v/y.mp4) and on b.csv line 2 (/w/y.mp4)"]
    many = [rows.ok("q", f"/v/q{i}.mp4", line=i) for i in range(1, 20)]
    assert len(id_conflicts([(lambda: iter(many), "/m/c.csv")], limit=3)) == 3
