"""Deciding what an input is, in the driver and cheaply (its rows reaching Ray:
tests/io/test_source.py)."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emodist.config import load_config
from emodist.io.source import list_clips, open_source
from emodist.storage import SourceError


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_clear_errors(tmp_path):
    (tmp_path / "m.csv").write_text("path,label\na.mp4,happy\n")
    with pytest.raises(SourceError, match="no 'uri' column"):
        list_clips(str(tmp_path / "m.csv"))
    with pytest.raises(SourceError, match="no such folder"):
        list_clips(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no videos found"):
        list_clips(str(tmp_path / "empty"))


def test_the_driver_reads_one_page_of_a_large_folder_not_the_listing(tmp_path, monkeypatch):
    """open_source only peeks; the listing itself runs where the rows are consumed
    (a Ray read task in the pipeline)."""
    from emodist.io import detect, walk

    for i in range(detect.PEEK_ITEMS + 500):
        touch(tmp_path / f"d{i % 7}" / f"{i:05d}.mp4")
    consumed = []
    real = walk.iter_files

    def counting(fs, path):
        for p in real(fs, path):
            consumed.append(p)
            yield p

    monkeypatch.setattr(walk, "iter_files", counting)
    src = open_source(str(tmp_path))
    assert src.format == "listing"
    assert len(consumed) <= detect.PEEK_ITEMS
    consumed.clear()
    assert sum(1 for _ in src.rows()) == detect.PEEK_ITEMS + 500
    assert len(consumed) == detect.PEEK_ITEMS + 500
    # the progress bar's total: counted in the driver when it takes under the budget
    assert src.count() == detect.PEEK_ITEMS + 500
    assert src.count(budget_s=0.0) is None  # over the budget: no total, no second full listing


def test_a_manifest_is_counted_with_its_bad_lines_and_object_storage_is_not_listed_twice(tmp_path):
    from emodist.io.source import ClipSource

    m = tmp_path / "m.csv"
    m.write_text("uri,label\na.mp4,happy\nb.mp4,sad,extra\n\nc.mp4,sad\n")
    assert open_source(str(m)).count() == 3  # a line that does not parse is a failure row, counted
    remote = ClipSource("s3://bucket/m.csv", "manifest", load_config(), files=["s3://bucket/m.csv"])
    assert remote.count() is None  # refused before any request (no such bucket is reachable here)


def test_formats_are_detected_from_suffixes_and_content(tmp_path):

    touch(tmp_path / "shards" / "a-000.tar")
    touch(tmp_path / "shards" / "a-001.tar")
    (tmp_path / "m.jsonl").write_text('{"uri": "x.mp4"}\n')
    (tmp_path / "split.csv").write_text("clips/00001 16 3\n")
    (tmp_path / "manifest.csv").write_text("uri,label\nx.mp4,sad\n")
    touch(tmp_path / "one.mp4")
    cases = {
        "shards": ("webdataset", 2), "shards/*.tar": ("webdataset", 2), "shards/a-000.tar": ("webdataset", 1),
        "m.jsonl": ("manifest", 1), "split.csv": ("split", 1), "manifest.csv": ("manifest", 1),
        "one.mp4": ("table", 0),
    }
    for rel, (fmt, files) in cases.items():
        src = open_source(str(tmp_path / rel))
        assert (src.format, len(src.files)) == (fmt, files), rel
    forced = open_source(str(tmp_path / "manifest.csv"), load_config(None, ["input.format=split"]))
    assert forced.format == "split"
    with pytest.raises(SourceError, match="not a video, manifest"):
        open_source(str(tmp_path / "one.mp4"), load_config(None, ["input.format=manifest"]))


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


def test_a_folder_without_clips_says_no_videos_and_no_frame_folders(tmp_path):
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(SourceError) as e:
        open_source(str(tmp_path))
    assert str(e.value) == (
        f"{tmp_path}: no videos found (looked for .mp4, .m4v, .mov, .mkv, .webm, .avi, .mpg, .mpeg, .flv, "
        ".wmv, .3gp, .ts) and no frame folders found (folders of .jpg, .jpeg, .png, .bmp, .webp images)"
    )


def test_an_empty_s3_prefix_says_nothing_is_under_it_and_how_to_check(s3):
    from tests.conftest_s3 import DATA_BUCKET

    cfg = s3.config()
    # A folder marker (what consoles create for "folders") and nothing else under it.
    s3.admin.call_s3("put_object", Bucket=DATA_BUCKET, Key="only-marker/", Body=b"")
    for prefix in ("no-such-prefix", "no-such-prefix/", "only-marker"):
        with pytest.raises(SourceError) as e:
            open_source(f"s3://{DATA_BUCKET}/{prefix}", cfg)
        shown = f"s3://{DATA_BUCKET}/{prefix.rstrip('/')}/"
        assert str(e.value) == (
            f"{shown}: nothing found under this prefix (no objects); check the prefix for a typo and "
            f"list it (aws s3 ls --endpoint-url {s3.endpoint} {shown})"
        ), prefix


@pytest.mark.parametrize("name", ["header.csv", "empty.jsonl", "empty.parquet", "empty.txt", "glob", "folder"])
def test_zero_clips_are_refused_at_start_whatever_the_input_kind(tmp_path, clips_dir, name):
    """A header-only manifest or a glob that matches nothing used to start Ray and exit 0
    with 'labeled 0 of 0'; an empty folder was refused at start. All are refused now."""
    from typer.testing import CliRunner

    from emodist.cli import app

    (tmp_path / "header.csv").write_text("uri,label\n")
    (tmp_path / "empty.jsonl").write_text("\n")
    pq.write_table(pa.table({"uri": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    (tmp_path / "empty.txt").write_text("# a split file with no lines\n")
    (tmp_path / "folder").mkdir()
    given = {"glob": f"{clips_dir}/*.avi", "folder": str(tmp_path / "folder")}.get(name, str(tmp_path / name))
    res = CliRunner().invoke(app, ["run", "-i", given, "-o", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and ("no clips" in lines[0] or "no videos found" in lines[0]), lines
    assert not (tmp_path / "out" / "_emodist").exists()
