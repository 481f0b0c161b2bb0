"""The scores of `emodist eval` (emodist/eval_metrics.py) against scikit-learn and by hand."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score

from emodist.evaluate import evaluate
from emodist.labels import DFEW
from tests.eval_cases import random_case, write_manifest, write_run


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
