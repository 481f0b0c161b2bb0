"""Evaluation metrics against scikit-learn, problem counting, and the report folder."""
from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score

from emodist import debias
from emodist import schema as col
from emodist.evaluate import INVALID, EvalInputError, evaluate
from emodist.labels import DFEW, canonical
from emodist.report import write_report

FACE_API_ORDER = ["neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised"]


def write_manifest(path, ids, labels):
    pacsv.write_csv(pa.table({"clip_id": ids, "uri": [f"{i}.mp4" for i in ids], "label": labels}), path)
    return str(path)


def write_run(folder, ids, labels, names=None, probs=None, failed=()):
    """An `emodist run` output folder: predictions/*.parquet (+ failures/)."""
    rows = [{col.CLIP_ID: i, col.LABEL: lab, col.LABEL_NAMES: names, col.PROBS_RAW: None if probs is None
             else [float(x) for x in probs[k]]} for k, (i, lab) in enumerate(zip(ids, labels))]
    (folder / "predictions").mkdir(parents=True)
    half = len(rows) // 2  # two part files, as a distributed writer leaves them
    pq.write_table(pa.Table.from_pylist(rows[:half], schema=col.PREDICTIONS), folder / "predictions/part-0.parquet")
    pq.write_table(pa.Table.from_pylist(rows[half:], schema=col.PREDICTIONS), folder / "predictions/part-1.parquet")
    (folder / "failures").mkdir()
    pq.write_table(pa.Table.from_pylist([{col.CLIP_ID: f} for f in failed], schema=col.FAILURES),
                   folder / "failures/part-0.parquet")
    return str(folder)


def random_case(seed, n=400):
    rng = np.random.default_rng(seed)
    share = np.array([0.3, 0.15, 0.25, 0.15, 0.08, 0.02, 0.05])
    truth = rng.choice(DFEW, size=n, p=share)
    right = rng.random(n) < 0.5
    pred = np.where(right, truth, rng.choice(DFEW, size=n, p=[0.2, 0.1, 0.5, 0.1, 0.05, 0.0, 0.05]))
    # not digits only: the old read_manifest parsed a numeric CSV clip_id as a number
    return [f"c{i:05d}" for i in range(n)], truth.tolist(), pred.tolist()


@pytest.mark.parametrize("seed, fmt", [(0, "run"), (1, "csv"), (2, "jsonl")])
def test_metrics_match_sklearn(tmp_path, seed, fmt):
    ids, truth, pred = random_case(seed)
    # surface forms the matcher must fold: 'happiness' -> happy, 'anger' -> angry
    shown_pred = ["happiness" if p == "happy" else "anger" if p == "angry" else p for p in pred]
    manifest = write_manifest(tmp_path / "m.csv", ids, truth)
    if fmt == "run":
        preds = write_run(tmp_path / "out", ids, shown_pred)
    elif fmt == "csv":
        preds = str(tmp_path / "p.csv")
        pacsv.write_csv(pa.table({"clip_id": ids, "pred": shown_pred}), preds)
    else:
        preds = str(tmp_path / "p.jsonl")
        (tmp_path / "p.jsonl").write_text("".join(json.dumps({"clip_id": i, "prediction": p}) + "\n"
                                                  for i, p in zip(ids, shown_pred)))
    r = evaluate(preds, manifest, bootstrap=0)
    present = sorted(set(truth))
    assert r.n == len(ids)
    assert r.uar == pytest.approx(recall_score(truth, pred, labels=present, average="macro"))
    assert r.war == pytest.approx(accuracy_score(truth, pred))
    assert r.macro_f1 == pytest.approx(f1_score(truth, pred, labels=present, average="macro"))
    assert r.macro_precision == pytest.approx(
        precision_score(truth, pred, labels=present, average="macro", zero_division=0))
    assert r.confusion == confusion_matrix(truth, pred, labels=list(DFEW)).tolist()
    per_recall = recall_score(truth, pred, labels=list(DFEW), average=None, zero_division=0)
    for c, expected in zip(r.per_class, per_recall):
        assert c.support == truth.count(c.label)
        assert c.recall == pytest.approx(expected)
    assert all(p.count == 0 for p in r.problems.values())
    assert "uar" in r.format_table()


def test_bootstrap_contains_point_and_is_seeded(tmp_path):
    ids, truth, pred = random_case(3, n=300)
    manifest = write_manifest(tmp_path / "m.csv", ids, truth)
    preds = write_run(tmp_path / "out", ids, pred)
    r = evaluate(preds, manifest, bootstrap=200, seed=7)
    for m in ("uar", "war", "macro_f1"):
        lo, hi = r.ci[m]
        assert lo < getattr(r, m) < hi
    assert evaluate(preds, manifest, bootstrap=200, seed=7).ci == r.ci


def test_neutral_sink_by_hand(tmp_path):
    # truth: 2 of 8 neutral (25%); predictions: 4 of 8 neutral (50%) -> ratio 2.0
    ids = [f"c{i}" for i in range(8)]
    truth = ["neutral", "neutral", "happy", "happy", "sad", "sad", "angry", "angry"]
    pred = ["neutral", "neutral", "neutral", "happy", "neutral", "sad", "happy", "angry"]
    r = evaluate(write_run(tmp_path / "out", ids, pred), write_manifest(tmp_path / "m.csv", ids, truth),
                 bootstrap=0)
    assert (r.sink.label, r.sink.pred_share, r.sink.true_share, r.sink.ratio) == ("neutral", 0.5, 0.25, 2.0)
    assert r.war == pytest.approx(5 / 8)  # neutral 2/2, happy 1/2, sad 1/2, angry 1/2
    assert r.uar == pytest.approx((1 + 0.5 + 0.5 + 0.5) / 4)


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


def biased_run(tmp_path, n=350, seed=0):
    """A model that leans to neutral: raw probs in face-api's order and names."""
    ids, truth, _ = random_case(seed, n)
    rng = np.random.default_rng(seed)
    order = [canonical(x) for x in FACE_API_ORDER]
    signal = np.array([[3.0 if name == t else 1.0 for name in order] for t in truth])
    probs = rng.dirichlet(np.ones(7), size=n) * signal * np.array([6.0, 1, 1, 1, 1, 1, 1])
    probs /= probs.sum(axis=1, keepdims=True)
    stored = [order[k] for k in probs.argmax(axis=1)]
    preds = write_run(tmp_path / "out", ids, stored, names=FACE_API_ORDER, probs=probs.astype(np.float32))
    return preds, write_manifest(tmp_path / "m.csv", ids, truth), truth, probs, order


def test_debias_comparison(tmp_path):
    preds, manifest, truth, probs, order = biased_run(tmp_path)
    r = evaluate(preds, manifest, bootstrap=0)
    by = {d.method: d for d in r.debias}
    assert list(by) == ["stored label", "raw", "contextual", "batch", "logit_adjust"]
    assert "content-free" in by["contextual"].skipped
    raw_pred = [order[k] for k in probs.argmax(axis=1)]
    assert by["raw"].war == pytest.approx(accuracy_score(truth, raw_pred))
    assert by["raw"].sink.label == "neutral" and by["raw"].sink.ratio > 1.5
    assert by["batch"].sink.ratio < by["raw"].sink.ratio
    assert by["batch"].uar > by["raw"].uar
    bc = debias.batch_calibration(probs.astype(np.float32))
    assert by["batch"].war == pytest.approx(accuracy_score(truth, [order[k] for k in bc.argmax(axis=1)]))
    cf = dict(zip(FACE_API_ORDER, [0.6, 0.1, 0.06, 0.06, 0.06, 0.06, 0.06]))
    r2 = evaluate(preds, manifest, bootstrap=0, content_free=json.dumps(cf))  # as the CLI passes it
    ctx = {d.method: d for d in r2.debias}["contextual"]
    assert ctx.skipped is None and ctx.sink.ratio < by["raw"].sink.ratio


def test_report_renders(tmp_path):
    preds, manifest, *_ = biased_run(tmp_path, n=200, seed=4)
    r = evaluate(preds, manifest, bootstrap=50)
    md = write_report(r, tmp_path / "report")
    text = md.read_text()
    for word in ("UAR", "WAR", "macro-F1", "Neutral sink", "Debiasing", "logit_adjust", "disgust"):
        assert word in text
    assert json.loads((tmp_path / "report/metrics.json").read_text())["uar"] == pytest.approx(r.uar)
    for png in ("confusion.png", "recall_vs_frequency.png"):
        path = tmp_path / "report" / png
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = mpimg.imread(path)
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert f"]({png})" in text


def test_bad_distribution_rows_are_counted(tmp_path):
    ids = ["a", "b", "c"]
    names = ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]
    probs = np.array([[0.9, 0.1, 0, 0, 0, 0, 0], [0.1, 0.9, 0, 0, 0, 0, 0], [0.0] * 7])  # c: all zero
    r = evaluate(write_run(tmp_path / "out", ids, ["happy", "sad", "happy"], names=names, probs=probs),
                 write_manifest(tmp_path / "m.csv", ids, ["happy", "sad", "sad"]), bootstrap=0)
    assert r.problems["bad_distribution"].count == 1
    assert r.problems["bad_distribution"].examples[0].startswith("c:")
    assert {d.method: d.n for d in r.debias}["raw"] == 2 and r.n == 3


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


NO_PRIOR = ("no training prior: pass --prior-from TRAIN_MANIFEST or set labeler.prior (the evaluated "
            "manifest's own class frequencies would leak its labels)")


def test_logit_adjustment_never_takes_its_prior_from_the_evaluated_labels(tmp_path):
    preds, manifest, truth, probs, order = biased_run(tmp_path)
    r = evaluate(preds, manifest, bootstrap=0)
    la = {d.method: d for d in r.debias}["logit_adjust"]
    assert la.skipped == NO_PRIOR and la.uar is None
    assert r.debias_note.endswith(f"; logit adjustment skipped: {NO_PRIOR}")
    assert f"  logit_adjust    skipped: {NO_PRIOR}" in r.format_table().splitlines()
    same = evaluate(preds, manifest, bootstrap=0, prior_from=manifest)
    assert {d.method: d for d in same.debias}["logit_adjust"].skipped == (
        f"--prior-from is the evaluated manifest itself ({manifest}): its class frequencies are the test "
        "labels; pass the training manifest")


def test_logit_adjustment_takes_the_training_prior_and_an_unseen_class_does_not_take_over(tmp_path):
    """A training manifest without one class: add-one smoothing alone gives that class a
    prior of 1/(N+L), and -log of it made it the answer for 98% of the clips here."""
    from typer.testing import CliRunner

    from emodist.cli import app

    preds, manifest, truth, probs, order = biased_run(tmp_path)
    rng = np.random.default_rng(1)
    train_labels = [x for x in rng.choice(DFEW, size=5000, p=[0.3, 0.15, 0.25, 0.15, 0.08, 0.02, 0.05])
                    if x != "disgust"]
    train = write_manifest(tmp_path / "train.csv", [f"t{i}" for i in range(len(train_labels))], train_labels)
    r = evaluate(preds, manifest, bootstrap=0, prior_from=train)
    la = {d.method: d for d in r.debias}["logit_adjust"]
    counts = np.array([train_labels.count(x) for x in DFEW], dtype=float)
    prior = np.where(counts > 0, counts, counts[counts > 0].min())  # disgust floored at the rarest seen class
    p = probs[:, [order.index(x) for x in DFEW]]
    expected = [DFEW[k] for k in debias.logit_adjustment(p, prior / prior.sum()).argmax(axis=1)]
    assert la.skipped is None and la.war == pytest.approx(accuracy_score(truth, expected))
    assert la.sink.label != "disgust"
    add_one = debias.logit_adjustment(p, debias.prior_from_labels(train_labels, DFEW)).argmax(axis=1)
    assert np.mean(add_one == DFEW.index("disgust")) > 0.9  # what the floor prevents
    assert r.debias_note.endswith(f"; logit adjustment uses the class frequencies of {train} as its prior (tau 1)")
    res = CliRunner().invoke(app, ["eval", "-p", preds, "-l", manifest, "--prior-from", train, "--bootstrap", "0"])
    assert res.exit_code == 0, res.output
    assert f"  logit_adjust    {la.n:>8}{la.uar:>8.4f}{la.war:>8.4f}{la.macro_f1:>8.4f}  " in res.output
