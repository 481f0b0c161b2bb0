"""The corrected manifest: same format, label changed where decided, provenance columns;
bad decisions are errors naming the clip or the line, and nothing is written then."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from emodist.audit.apply import apply_decisions
from emodist.audit.read import AuditInputError
from emodist.cli import app
from emodist.config import Config
from emodist.labels import DFEW

HEADER = "clip_id,uri,original,decision,decided_label\n"


def test_parquet_manifest_keeps_its_format_and_columns(tmp_path):
    pq.write_table(pa.table({"uri": ["a.mp4", "b.mp4", "sub/c.mp4"], "label": ["happy", "sad", "fear"],
                             "fold": [1, 2, 3]}), tmp_path / "m.parquet")
    # no clip_id column: ids are the paths under the manifest's folder, as `run` gives them
    (tmp_path / "d.csv").write_text(HEADER + "a,/x/a.mp4,happy,other,disgust\nsub/c,/x/c.mp4,fear,keep,fear\n")
    a = apply_decisions(str(tmp_path / "d.csv"), str(tmp_path / "m.parquet"), str(tmp_path / "n.parquet"),
                        Config(), DFEW)
    t = pq.read_table(tmp_path / "n.parquet")
    assert t.column_names == ["uri", "label", "fold", "original_label", "label_source"]
    assert t.column("label").to_pylist() == ["disgust", "sad", "fear"]
    assert t.column("original_label").to_pylist() == ["happy", "sad", "fear"]
    assert t.column("label_source").to_pylist() == ["review:other", "manifest", "review:keep"]
    assert t.column("fold").to_pylist() == [1, 2, 3]
    assert (a.rows, a.reviewed, a.changed) == (3, 2, 1)


def test_jsonl_manifest(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"clip_id": "0001", "uri": "a.mp4", "label": "sad"}\n')
    (tmp_path / "d.csv").write_text(HEADER + "0001,a.mp4,sad,predicted,angry\n")
    apply_decisions(str(tmp_path / "d.csv"), str(tmp_path / "m.jsonl"), str(tmp_path / "n.jsonl"), Config(), DFEW)
    row = json.loads((tmp_path / "n.jsonl").read_text())
    assert row["clip_id"] == "0001" and row["label"] == "angry" and row["label_source"] == "review:predicted"


@pytest.mark.parametrize("line, words", [
    ("zzz,z.mp4,happy,keep,happy\n", ["1 decided clip(s) not in", "zzz"]),
    ("a,a.mp4,happy,predicted,joyful\n", ["line 2", "'joyful'", "label set"]),
    ("a,a.mp4,happy,maybe,sad\n", ["line 2", "'maybe'", "keep"]),
    ("a,a.mp4,happy,keep,happy\na,a.mp4,happy,keep,happy\n", ["line 3", "second decision for a", "line 2"]),
])
def test_bad_decisions_name_the_clip_or_line_and_write_nothing(tmp_path, line, words):
    (tmp_path / "m.csv").write_text("clip_id,uri,label\na,a.mp4,happy\n")
    (tmp_path / "d.csv").write_text(HEADER + line)
    with pytest.raises(AuditInputError) as e:
        apply_decisions(str(tmp_path / "d.csv"), str(tmp_path / "m.csv"), str(tmp_path / "n.csv"), Config(), DFEW)
    for w in words:
        assert w in str(e.value)
    assert not (tmp_path / "n.csv").exists()


def test_cli_apply_and_bad_input_exit_2(tmp_path):
    (tmp_path / "m.csv").write_text("clip_id,uri,label\na,a.mp4,happy\nb,b.mp4,sad\n")
    (tmp_path / "d.csv").write_text(HEADER + "b,b.mp4,sad,other,neutral\n")
    run = CliRunner().invoke(app, ["audit", "--apply", str(tmp_path / "d.csv"), "--labels", str(tmp_path / "m.csv"),
                                   "--output", str(tmp_path / "n.csv")])
    assert run.exit_code == 0, run.output
    assert "2 clips, 1 reviewed, 1 labels changed" in run.output
    import csv

    rows = list(csv.reader((tmp_path / "n.csv").open()))
    assert rows[0] == ["clip_id", "uri", "label", "original_label", "label_source"]
    assert rows[2] == ["b", "b.mp4", "neutral", "sad", "review:other"]
    bad = CliRunner().invoke(app, ["audit", "--predictions", str(tmp_path / "nothing"), "--labels",
                                   str(tmp_path / "m.csv"), "--report", str(tmp_path / "rep")])
    assert bad.exit_code == 2 and "not found" in bad.output
