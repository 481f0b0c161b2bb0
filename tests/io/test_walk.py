"""Listing folders and globs: relative ids, frame folders beside videos, streamed."""
from tests.conftest_s3 import solid_frames

from emodist.config import load_config
from emodist.io.source import list_clips, open_source
from emodist.io.rows import clip_id_for


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def rows(uri, *overrides):
    return list(open_source(str(uri), load_config(None, list(overrides))).rows())


def test_folder_listing_keeps_relative_ids_and_skips_non_videos(tmp_path):
    touch(tmp_path / "happy" / "001.mp4")
    touch(tmp_path / "sad" / "001.mp4")
    touch(tmp_path / "notes.txt")
    t = list_clips(str(tmp_path)).to_pylist()
    assert [r["clip_id"] for r in t] == ["happy/001", "sad/001"]
    assert t[0]["uri"] == str(tmp_path / "happy" / "001.mp4")


def test_glob(tmp_path):
    for n in ("a.mp4", "b.mkv", "c.mp4"):
        touch(tmp_path / n)
    assert [r["clip_id"] for r in list_clips(str(tmp_path / "*.mp4")).to_pylist()] == ["a", "c"]


def test_clip_id_for():
    assert clip_id_for("s3://b/data/happy/01.mp4", "s3://b/data") == "happy/01"
    assert clip_id_for("/x/y/01.mp4") == "01"


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
