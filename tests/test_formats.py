"""Dataset formats without a server or Ray: split files and label codes, manifests with
bad lines, tar shards streamed member by member, frame folders decoded by the plan."""
import io
import json
import tarfile

import numpy as np
import pytest
from tests.conftest_s3 import solid_frames, write_frame_folder

from emodist import formats as fm
from emodist import schema as col
from emodist.config import load_config
from emodist.sources import SourceError, list_clips, open_source
from emodist.stages.base import ClipError
from emodist.stages.decode import decode_any, decode_clip, decode_frames


def rows(uri, *overrides):
    return list(open_source(str(uri), load_config(None, list(overrides))).rows())


def failures(rs):
    return [r for r in rs if r[col.ERROR_STAGE]]


# --- label codes ---------------------------------------------------------------------------


@pytest.mark.parametrize("labels, code, name", [
    ("dfew", "1", "happy"), ("dfew", "3", "neutral"), ("dfew", "6", "disgust"), ("dfew", "7", "fear"),
    ("ferv39k", "0", "angry"), ("ferv39k", "3", "happy"), ("ferv39k", "6", "surprise"),
    ("mafw", "1", "angry"), ("mafw", "4", "happy"), ("mafw", "8", "contempt"), ("mafw", "11", "disappointment"),
    ("dfew", "Happiness", "happy"), ("mafw", "helplessness", "helplessness"), ("ferv39k", "Sad", "sad"),
])
def test_label_codes_follow_each_datasets_own_table(labels, code, name):
    assert fm.label_from_code(code, labels) == name


def test_label_codes_out_of_range_or_unknown_set_are_clear():
    with pytest.raises(fm.LineError, match=r"label code 0 is not a DFEW code \(1\.\.7"):
        fm.label_from_code("0", "dfew")
    with pytest.raises(fm.LineError, match="label code 12 is not a MAFW code"):
        fm.label_from_code("12", "mafw")
    with pytest.raises(fm.LineError, match="codes are only known for labels: dfew, ferv39k or mafw"):
        fm.label_from_code("2", ["a", "b", "c"])


def test_split_lines():
    assert fm.parse_split_line("clips/00001 16 5\n", "dfew") == ("clips/00001", "surprise")
    assert fm.parse_split_line("Action/Sad/0010 Sad", "ferv39k") == ("Action/Sad/0010", "sad")
    assert fm.parse_split_line("00025.mp4 anger", "mafw") == ("00025.mp4", "angry")
    with pytest.raises(fm.LineError, match="found 4 fields"):
        fm.parse_split_line("a b c d", "dfew")
    with pytest.raises(fm.LineError, match="num_frames 'x' is not a whole number"):
        fm.parse_split_line("a x 3", "dfew")
    assert fm.looks_like_split("/data/DFEW/jpg_256/02522 5") and fm.looks_like_split("a 16 3")
    assert not fm.looks_like_split("uri,label") and not fm.looks_like_split("a,b,c")
    # relative paths keep their folders (FERV39k repeats clip names across folders)
    assert fm.split_clip_id("Action/Sad/0010") == "Action/Sad/0010"
    assert fm.split_clip_id("/mnt/DFEW/clips/00001.mp4") == "00001"


def test_natural_order_and_member_names():
    assert sorted(["10.jpg", "2.jpg", "1.jpg"], key=fm.natural_key) == ["1.jpg", "2.jpg", "10.jpg"]
    for bad in ("../x.mp4", "/abs/x.mp4", "a/../../x.mp4", "C:/x.mp4", "..\\x.mp4"):
        assert fm.member_escapes(bad), bad
    assert not fm.member_escapes("a/b..c/x.mp4")
    assert fm.split_key("a/000123.seg.mp4") == ("a/000123", "seg.mp4")


# --- split files and manifests, read through open_source ----------------------------------


def test_split_file_by_suffix_and_by_content(tmp_path):
    (tmp_path / "s.txt").write_text("v/a.mp4 10 1\nv/b 20 7\n\nbroken line with five fields\nv/c.mp4 9\n")
    rs = rows(tmp_path / "s.txt")
    good = [(r[col.CLIP_ID], r[col.URI], r[col.REF_LABEL]) for r in rs if not r[col.ERROR_STAGE]]
    assert good == [("v/a", str(tmp_path / "v/a.mp4"), "happy"), ("v/b", str(tmp_path / "v/b"), "fear")]
    bad = failures(rs)
    assert [r[col.CLIP_ID] for r in bad] == ["s.txt:4", "s.txt:5"]
    assert "line 4: expected 'path num_frames label' or 'path label', found 5 fields" in bad[0][col.ERROR_MESSAGE]
    assert "line 5: label code 9 is not a DFEW code" in bad[1][col.ERROR_MESSAGE]
    assert all(r[col.ERROR_STAGE] == "list" and str(tmp_path / "s.txt") in r[col.ERROR_MESSAGE] for r in bad)
    # MAE-DFER writes the same lines into a headerless .csv
    (tmp_path / "train.csv").write_text("/data/ferv/Action/Sad/0010 3\n")
    assert [(r[col.CLIP_ID], r[col.REF_LABEL]) for r in rows(tmp_path / "train.csv", "labels=ferv39k")] == [("0010", "happy")]


def test_input_root_resolves_relative_paths(tmp_path):
    (tmp_path / "s.txt").write_text("00025.mp4 anger\n")
    r = rows(tmp_path / "s.txt", "labels=mafw", "input.root=s3://bucket/mafw/clips")[0]
    assert (r[col.URI], r[col.CLIP_ID], r[col.REF_LABEL]) == ("s3://bucket/mafw/clips/00025.mp4", "00025", "angry")


def test_csv_manifest_bad_lines_are_failure_rows_with_line_numbers(tmp_path):
    (tmp_path / "m.csv").write_text(
        'uri,label\na.mp4,happy\n"b,\nc.mp4",sad\nd.mp4,sad,extra\ne.mp4\n,fear\nf.mp4,fear\n')
    rs = rows(tmp_path / "m.csv")
    assert [r[col.URI].rsplit("/", 1)[-1] for r in rs if not r[col.ERROR_STAGE]] == ["a.mp4", "b,\nc.mp4", "f.mp4"]
    msgs = {r[col.CLIP_ID]: r[col.ERROR_MESSAGE] for r in failures(rs)}
    assert set(msgs) == {"m.csv:5", "m.csv:6", "m.csv:7"}  # physical line numbers
    assert "line 5: expected 2 fields (uri,label), found 3" in msgs["m.csv:5"]
    assert "line 6: expected 2 fields (uri,label), found 1" in msgs["m.csv:6"]
    assert "line 7: empty uri" in msgs["m.csv:7"]
    with pytest.raises(SourceError, match="line 5: expected 2 fields"):
        list_clips(str(tmp_path / "m.csv"))  # the in-process listing refuses instead


def test_jsonl_manifest_bad_lines(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"uri": "a.mp4", "label": "sad"}\n{"uri": \n["x"]\n{"label": "x"}\n')
    rs = rows(tmp_path / "m.jsonl")
    assert [r[col.CLIP_ID] for r in rs if not r[col.ERROR_STAGE]] == ["a"]
    msgs = [r[col.ERROR_MESSAGE] for r in failures(rs)]
    assert "line 2: not valid JSON" in msgs[0] and "line 3: expected a JSON object" in msgs[1]
    assert "line 4: no 'uri' key" in msgs[2]


def test_format_detection_errors(tmp_path):
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(SourceError, match="not a video, manifest"):
        open_source(str(tmp_path / "notes.md"))
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "m.csv").write_text("uri\na.mp4\n")
    with pytest.raises(SourceError, match="holds manifest/split files: pass one of them"):
        open_source(str(tmp_path / "only"))
    with pytest.raises(SourceError, match="no tar shards found"):
        open_source(str(tmp_path / "only"), load_config(None, ["input.format=webdataset"]))


# --- tar shards -------------------------------------------------------------------------------


def make_tar(members: list[tuple[str, bytes]], gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def shard_rows(data: bytes, max_bytes: int = 1 << 30):
    def ok(cid, uri, label, payload):
        return {"ok": True, "id": cid, "uri": uri, "label": label, "data": payload}

    def fail(cid, uri, msg):
        return {"ok": False, "id": cid, "uri": uri, "msg": msg}

    return list(fm.iter_shard(io.BytesIO(data), "s3://b/shard.tar", max_bytes=max_bytes,
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
    assert [(r[col.CLIP_ID], r[col.REF_LABEL]) for r in good] == [("k1", "happy")]
    cfg = load_config(None, ["mode=sparse"])
    from_bytes = decode_any(good[0][col.URI], cfg, good[0]["data"])
    from_uri = decode_any(good[0][col.URI], cfg)  # shard#member, as a retry reads it
    from_file = decode_clip(str(clips_dir / "clip_00001.mp4"), cfg)
    for out in (from_bytes, from_uri):
        np.testing.assert_array_equal(out[col.FRAMES], from_file[col.FRAMES])
    assert not (tmp_path.parent / "x.mp4").exists() and not (tmp_path / "x.mp4").exists()


# --- frame folders ----------------------------------------------------------------------------


def test_frame_folder_picks_the_image_on_screen_at_each_planned_time(tmp_path):
    folder = solid_frames(tmp_path / "clip", 60)  # 2.4 s at 25 fps; 10.png..60.png sort after 9.png
    cfg = load_config(None, ["decode.fit=stretch", "decode.width=16", "decode.height=16"])
    out = decode_frames(str(folder), cfg)
    assert out[col.DURATION_S] == pytest.approx(60 / 25) and out[col.NATIVE_FPS] == 25
    expect = np.floor((out[col.FRAME_TS] + 1e-3) * 25).astype(int)
    assert list(out[col.FRAMES][:, 8, 8, 0]) == list(expect)
    kf = out[col.FRAME_TS][out[col.FRAME_GAP] == -1]
    np.testing.assert_allclose(kf, [0.0, 1.0, 2.0])
    slow = decode_frames(str(folder), load_config(None, ["input.frame_folder_fps=10", "mode=sparse"]))
    assert slow[col.DURATION_S] == pytest.approx(6.0) and len(slow[col.FRAME_TS]) == 6


def test_frame_folder_resized_like_a_video(tmp_path, clips_dir):
    folder = tmp_path / "f"
    write_frame_folder(clips_dir / "clip_00002.mp4", folder, "png")
    for fit in ("pad", "crop"):
        cfg = load_config(None, [f"decode.fit={fit}", "decode.width=160", "decode.height=96", "mode=sparse"])
        frames = decode_any(str(folder), cfg)[col.FRAMES]
        video = decode_clip(str(clips_dir / "clip_00002.mp4"), cfg)[col.FRAMES]
        assert frames.shape == video.shape
        assert np.abs(frames.astype(int) - video.astype(int)).mean() < 3  # same picks, same fit


def test_frame_folder_with_an_unreadable_image_names_it(tmp_path):
    folder = solid_frames(tmp_path / "clip", 30, ext="jpg")
    (folder / "12.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    with pytest.raises(ClipError, match=r"unreadable image 12\.jpg"):
        decode_frames(str(folder), load_config(None, ["mode=dense"]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClipError, match="no video and no frame images"):
        decode_any(str(tmp_path / "empty"), load_config())


@pytest.mark.parametrize("override, needle", [
    ("input.max_frames=20", "holds 30 frames, over the limit input.max_frames = 20; raise input.max_frames"),
    ("input.max_duration_s=1", "over the limit input.max_duration_s = 1; raise input.max_duration_s"),
    ("input.max_width=16", "is 32x32, over the limit input.max_width x input.max_height = 16x4320"),
    ("input.max_file_mb=0.00001", "over the limit input.max_file_mb = 1e-05; raise input.max_file_mb"),
])
def test_frame_folder_limits(tmp_path, override, needle):
    folder = solid_frames(tmp_path / "clip", 30)
    with pytest.raises(ClipError) as e:
        decode_frames(str(folder), load_config(None, [override]))
    assert needle in str(e.value)


def test_listing_finds_frame_folders_and_videos(tmp_path, clips_dir):
    solid_frames(tmp_path / "happy" / "001", 5)
    solid_frames(tmp_path / "sad" / "002", 5)
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "v.mp4").write_bytes((clips_dir / "clip_00000.mp4").read_bytes())
    (tmp_path / "videos" / "cover.jpg").write_bytes(b"x")  # beside videos: not a frame folder
    t = list_clips(str(tmp_path)).to_pylist()
    assert sorted((r["clip_id"], r["uri"]) for r in t) == [
        ("happy/001", str(tmp_path / "happy" / "001")), ("sad/002", str(tmp_path / "sad" / "002")),
        ("videos/v", str(tmp_path / "videos" / "v.mp4"))]
    only_frames = list_clips(str(tmp_path), load_config(None, ["input.format=frames"])).to_pylist()
    assert sorted(r["clip_id"] for r in only_frames) == ["happy/001", "sad/002", "videos"]
    single = list_clips(str(tmp_path / "happy" / "001")).to_pylist()
    assert [r["clip_id"] for r in single] == ["001"]
