"""Tar shards streamed member by member: samples grouped by key, bad members failing
alone, a damaged shard keeping what came before the damage."""
import io
import json
import tarfile

import numpy as np

from emodist import schema as col
from emodist.config import load_config
from emodist.decoders import decode
from emodist.decoders.pyav import decode_clip
from emodist.io.source import open_source
from emodist.io.shards import iter_shard


def rows(uri, *overrides):
    return list(open_source(str(uri), load_config(None, list(overrides))).rows())


def failures(rs):
    return [r for r in rs if r[col.ERROR_STAGE]]


def make_tar(members: list[tuple[str, bytes]], gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def shard_rows(data: bytes, max_bytes: int = 1 << 30):
    cfg = load_config(None, [f"input.max_file_mb={max_bytes / 2**20}"])

    def ok(cid, uri, label, payload):
        return {"ok": True, "id": cid, "uri": uri, "label": label, "data": payload}

    def fail(cid, uri, msg):
        return {"ok": False, "id": cid, "uri": uri, "msg": msg}

    return list(iter_shard(io.BytesIO(data), "s3://b/shard.tar", cfg=cfg,
                              label_names=("happy", "sad", "neutral"), fail=fail, ok=ok))


def test_shard_samples_grouped_by_key_with_labels():
    out = shard_rows(make_tar([
        ("a/001.mp4", b"v1"), ("a/001.cls", b"1"), ("a/002.mp4", b"v2"), ("a/002.json", json.dumps({"label": "Happiness"}).encode()),
        ("003.mp4", b"v3"), ("003.txt", b"neutral\n"), ("004.mp4", b"v4"),
    ], gz=True))
    assert [(r["id"], r["label"], r["data"], r["uri"]) for r in out] == [
        ("a/001", "sad", b"v1", "s3://b/shard.tar#a/001.mp4"), ("a/002", "happy", b"v2", "s3://b/shard.tar#a/002.mp4"),
        ("003", "neutral", b"v3", "s3://b/shard.tar#003.mp4"), ("004", "", b"v4", "s3://b/shard.tar#004.mp4")]


def test_shard_bad_members_fail_alone():
    out = shard_rows(make_tar([
        ("001.mp4", b"v1"), ("../002.mp4", b"evil"), ("/etc/003.mp4", b"evil"), ("004.json", b"{}"),
        ("005.mp4", b"x" * 100), ("006.mp4", b"v6"), ("006.cls", b"9"), ("007.mp4", b"v7"), ("001.txt", b"sad"),
    ]), max_bytes=50)
    by_id = {}
    for r in out:
        by_id.setdefault(r["id"], r)
    assert by_id["001"]["ok"] and by_id["007"]["ok"]
    assert "escapes the shard" in by_id["../002.mp4"]["msg"] and "escapes the shard" in by_id["/etc/003.mp4"]["msg"]
    assert "data" not in by_id["../002.mp4"]  # never read into a row
    assert "sample has no video member (found: json)" in by_id["004"]["msg"]
    assert "input.max_file_mb" in by_id["005"]["msg"] and "data" not in by_id["005"]
    assert "class index 9 is outside the label set" in by_id["006"]["msg"]
    dup = [r for r in out if r["id"] == "001" and not r["ok"]]
    assert dup and "duplicate key" in dup[0]["msg"]


def test_truncated_shard_keeps_samples_before_the_damage():
    data = make_tar([("001.mp4", b"v" * 1500), ("002.mp4", b"w" * 2000)])
    out = shard_rows(data[:3000])  # the second member's data is cut
    assert out[0]["ok"] and out[0]["id"] == "001"
    assert not out[-1]["ok"] and "damaged or truncated" in out[-1]["msg"] and out[-1]["id"] == "shard.tar"


def test_local_shards_through_open_source_and_decode(tmp_path, clips_dir):
    clip = (clips_dir / "clip_00001.mp4").read_bytes()
    (tmp_path / "shard-0.tar").write_bytes(make_tar([("k1.mp4", clip), ("k1.cls", b"0"), ("../x.mp4", clip)]))
    src = open_source(str(tmp_path))
    assert src.format == "webdataset" and src.files == [str(tmp_path / "shard-0.tar")]
    rs = list(src.rows())
    good = [r for r in rs if not r[col.ERROR_STAGE]]
    assert [(r[col.CLIP_ID], r[col.REF_LABEL]) for r in good] == [("shard-0/k1", "happy")]  # shard name / key
    cfg = load_config(None, ["mode=sparse"])
    from_bytes = decode(good[0][col.URI], cfg, good[0]["data"])[0]
    from_uri = decode(good[0][col.URI], cfg)[0]  # shard#member, as a retry reads it
    from_file = decode_clip(str(clips_dir / "clip_00001.mp4"), cfg)
    for out in (from_bytes, from_uri):
        np.testing.assert_array_equal(out[col.FRAMES], from_file[col.FRAMES])
    assert not (tmp_path.parent / "x.mp4").exists() and not (tmp_path / "x.mp4").exists()
