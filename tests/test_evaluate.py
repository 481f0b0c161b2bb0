"""`emodist eval`'s reading and pairing (emodist/evaluate.py): every predictions and manifest
format, bad rows and lines counted as problems, errors that name the input."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from emodist.eval_result import INVALID, EvalInputError
from emodist.evaluate import evaluate
from tests.eval_cases import write_manifest, write_run


def test_problems_are_counted_not_dropped(tmp_path):
    man_ids = ["a", "b", "c", "d", "e", "e", "f", "g"]
    man_labels = ["happy", "sad", "bored", "", "fear", "sad", "angry", "neutral"]
    pred_ids = ["a", "a", "b", "c", "e", "f", "zz"]
    pred_labels = ["happy", "sad", "sad", "happy", "fear", "confused", "happy"]
    r = evaluate(write_run(tmp_path / "out", pred_ids, pred_labels, failed=["g"]),
                 write_manifest(tmp_path / "m.csv", man_ids, man_labels), bootstrap=0)
    counts = {k: p.count for k, p in r.problems.items()}
    assert counts == {"duplicate_prediction_ids": 1, "duplicate_manifest_ids": 1,
                      "prediction_not_in_manifest": 1, "missing_prediction": 1, "failed_clips": 1,
                      "unknown_truth_label": 2, "unknown_pred_label": 1, "bad_distribution": 0,
                      "unreadable_manifest_lines": 0, "unreadable_prediction_lines": 0}
    assert r.problems["prediction_not_in_manifest"].examples == ["zz"]
    assert r.problems["missing_prediction"].examples == ["g"]
    assert r.problems["unknown_pred_label"].examples == ["f: 'confused'"]
    # scored: a (first row: happy, right), b right, e right, f 'confused' counts as wrong
    assert r.n == 4 and r.war == pytest.approx(3 / 4)
    assert r.confusion_cols[-1] == INVALID
    assert "problem unknown_pred_label: 1" in r.format_table()


def test_errors_name_the_input(tmp_path):
    manifest = write_manifest(tmp_path / "m.csv", ["a"], ["happy"])
    pacsv.write_csv(pa.table({"clip_id": ["a"], "emotion": ["happy"]}), tmp_path / "p.csv")
    with pytest.raises(EvalInputError, match="predicted-label column"):
        evaluate(str(tmp_path / "p.csv"), manifest)
    with pytest.raises(EvalInputError, match="not found"):
        evaluate(str(tmp_path / "nope.parquet"), manifest)
    pacsv.write_csv(pa.table({"clip_id": ["b"], "label": ["happy"]}), tmp_path / "q.csv")
    with pytest.raises(EvalInputError, match="no clip"):
        evaluate(str(tmp_path / "q.csv"), manifest)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "split", "split-codes-in-csv"])
def test_labels_take_every_manifest_format_run_takes_with_the_same_root_rules(tmp_path, fmt):
    """`--labels` is read as `run --input` reads it: csv/jsonl/parquet manifests and split
    files (words, or the dataset's numeric codes; as .txt or header-less .csv), relative
    paths under `input.root`; a line that does not parse is counted, not fatal."""
    from emodist.config import load_config

    rel = ["Action/Happy/0001", "Action/Sad/0001", "Talk/Happy/0002", "Talk/Sad/0002"]  # ids repeat per folder
    truth = ["happy", "sad", "happy", "sad"]
    preds = write_run(tmp_path / "out", rel, ["happy", "sad", "sad", "sad"])
    root = "/data/ferv39k"
    if fmt == "csv":
        path = tmp_path / "m.csv"
        path.write_text("clip_id,uri,label\n" + "".join(f"{r},{r}.mp4,{t}\n" for r, t in zip(rel, truth))
                        + "bad,line,with,too,many\n")
    elif fmt == "jsonl":
        path = tmp_path / "m.jsonl"
        path.write_text("".join(json.dumps({"clip_id": r, "uri": r + ".mp4", "label": t}) + "\n"
                                for r, t in zip(rel, truth)) + "{not json\n")
    elif fmt == "parquet":
        path = tmp_path / "m.parquet"
        pq.write_table(pa.table({"clip_id": rel, "uri": [r + ".mp4" for r in rel], "label": truth}), path)
    elif fmt == "split":  # FERV39k's own list: 'path label', ids are the relative paths
        path = tmp_path / "train_All.txt"
        path.write_text("".join(f"{r} {t.title()}\n" for r, t in zip(rel, truth)) + "a b c d\n")
    else:  # DFEW-style numeric codes (1 happy, 2 sad) in a header-less .csv
        path = tmp_path / "set_1.csv"
        path.write_text("".join(f"{r} 16 {1 if t == 'happy' else 2}\n" for r, t in zip(rel, truth)))
    cfg = load_config(None, [f"input.root={root}", "labels=ferv39k" if "codes" not in fmt else "labels=dfew"])
    res = evaluate(preds, str(path), label_set=cfg.labels, bootstrap=0, cfg=cfg)
    assert res.n == 4 and res.war == pytest.approx(0.75)
    assert res.problems["missing_prediction"].count == 0
    bad = res.problems["unreadable_manifest_lines"]
    assert bad.count == (0 if fmt in ("parquet", "split-codes-in-csv") else 1)
    if bad.count:
        assert path.name in bad.examples[0] and "line" in bad.examples[0]


def test_a_csv_line_with_an_extra_field_is_counted_with_its_file_and_line_not_fatal(tmp_path):
    """`run` accepts a manifest with a line of too many fields (that line fails alone); eval
    used to abort on the same file with Arrow's "CSV parse error: Expected 3 columns, got 4"
    (no file, no line). As --labels and as --predictions it is now read line by line."""
    from typer.testing import CliRunner

    from emodist.cli import app

    m = tmp_path / "m.csv"
    m.write_text("uri,label,clip_id\na.mp4,happy,a\nb.mp4,sad,b,extra\nc.mp4,sad,c\n")
    res = CliRunner().invoke(app, ["eval", "--predictions", str(m), "--labels", str(m), "--bootstrap", "0",
                                   "--report", str(tmp_path / "report")])
    assert res.exit_code == 0, res.output
    assert "CSV parse error" not in res.output
    # the report's pictures are named where the user looks
    assert (f"report: {tmp_path / 'report' / 'report.md'} (pictures beside it: confusion.png, "
            "recall_vs_frequency.png)") in res.output
    assert res.output.startswith(f"2 clips scored on 7 classes ({m})\n")
    line = f"{m}: line 3: expected 3 fields (uri,label,clip_id), found 4; quote fields that contain commas"
    assert f"  problem unreadable_manifest_lines: 1 (manifest line that does not parse; not scored) e.g. {line}\n" in res.output
    assert f"  problem unreadable_prediction_lines: 1 (predictions line that does not parse; not scored) e.g. {line}\n" in res.output
