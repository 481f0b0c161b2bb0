"""The driver's commit: finished batches become parts, each (clip_id, uri) once; a
repeated pair counts as a duplicate, an id that names a second uri fails, carriers'
failed rows and counts are unpacked; the run's key store lives in OUT/_emodist/keys/
and is gone when the committer is."""
import os

import numpy as np
import pyarrow.dataset as pads

from emodist import schema as col
from emodist.config import Config
from emodist.io import rows
from emodist.output import carry
from emodist.output.commit import Committer
from emodist.output.folder import FAILURES, KEYS, PREDICTIONS


def _batch(rs: list[dict]) -> dict:
    names = dict.fromkeys([*col.PREDICTIONS.names, *rows.SOURCE.names, carry.COLUMN])
    return {c: np.array([r.get(c) for r in rs], dtype=object) for c in names}


def _ok(clip_id: str, uri: str) -> dict:
    return {**rows.ok(clip_id, uri, "happy"), col.LABEL: "happy", col.PROBS: [1.0], col.PROBS_RAW: [1.0]}


def test_each_clip_once_repeats_counted_conflicts_failed_and_carriers_unpacked(tmp_path):
    out = tmp_path / "out"
    carried = carry.carrier([rows.fail("e", "/v/e.mp4", "not found")], skipped=3, duplicates=1,
                            template=rows.ok("", ""))
    decode_failed = {**rows.ok("d", "/v/d.mp4"), col.ERROR_STAGE: "decode", col.ERROR_TYPE: "ClipError",
                     col.ERROR_MESSAGE: "truncated"}
    with Committer(str(out), Config(), "h1", "r1") as committer:
        stores = os.listdir(out / KEYS)
        assert len(stores) == 1 and stores[0].startswith(f"emodist-keys-{os.getpid()}-")
        labeled, failed = committer.add(_batch([_ok("a", "/v/a.mp4"), _ok("b", "/v/b.mp4"), decode_failed, carried]))
        assert (labeled, failed) == (2, 2)
        # a later batch: a repeat of a (duplicate), c, and c again under another uri (fails)
        labeled, failed = committer.add(_batch([_ok("a", "/v/a.mp4"), _ok("c", "/v/c.mp4"), _ok("c", "/w/c.mp4")]))
        assert (labeled, failed) == (1, 1)
        committer.close()
        counts = committer.counts
    assert os.listdir(out / KEYS) == []  # the key store goes with the committer
    assert (counts.labeled, counts.failed, counts.skipped, counts.duplicates) == (3, 3, 3, 2)
    assert counts.failures_by_stage == {"decode": 1, "list": 2}
    preds = pads.dataset(out / PREDICTIONS).to_table().to_pylist()
    assert sorted((r[col.CLIP_ID], r[col.URI]) for r in preds) == [("a", "/v/a.mp4"), ("b", "/v/b.mp4"),
                                                                   ("c", "/v/c.mp4")]
    assert {r[col.CONFIG_HASH] for r in preds} == {"h1"}
    fails = {r[col.CLIP_ID] + r[col.URI]: r for r in pads.dataset(out / FAILURES).to_table().to_pylist()}
    assert sorted(fails) == ["c/w/c.mp4", "d/v/d.mp4", "e/v/e.mp4"]
    assert "clip_id 'c' already names another clip of this input" in fails["c/w/c.mp4"][col.ERROR_MESSAGE]
    assert fails["e/v/e.mp4"][col.ATTEMPTS] == 1 and {r[col.CONFIG_HASH] for r in fails.values()} == {"h1"}
