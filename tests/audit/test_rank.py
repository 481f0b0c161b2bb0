"""The ranking is cleanlab's (same issues and scores as its in-memory functions), it finds
the labels made wrong on purpose, and bad input is counted, listed or refused."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.metrics import cohen_kappa_score

from emodist.audit import synthetic
from emodist.audit.rank import flip_table, rank
from emodist.audit.read import AuditInputError, open_predictions, read_labels
from emodist.audit.report import audit
from emodist.config import Config
from emodist.labels import DFEW


@pytest.fixture
def case(tmp_path):
    c = synthetic.make_case(2000, DFEW, seed=3)
    synthetic.write_predictions(tmp_path / "out", c, DFEW, part_rows=700)  # three parts
    synthetic.write_manifest(tmp_path / "man.csv", c, DFEW)
    return c


def test_issues_and_scores_are_cleanlabs(tmp_path, case):
    cfg = Config()
    r = rank(open_predictions(str(tmp_path / "out"), cfg), read_labels(str(tmp_path / "man.csv"), cfg, DFEW))
    p = case.probs.astype(np.float64)
    p /= p.sum(axis=1, keepdims=True)
    expected = find_label_issues(case.original, p, filter_by="low_self_confidence",
                                 return_indices_ranked_by="self_confidence")
    assert abs(len(r.order) - len(expected)) <= 1  # cleanlab documents a rounding difference of 1
    assert len(set(r.order) & set(expected)) >= len(expected) - 1
    np.testing.assert_allclose(r.score, get_label_quality_scores(case.original, p, method="self_confidence"),
                               atol=1e-6)
    # the labels made wrong on purpose come first
    assert case.noisy[r.order[:100]].mean() > 0.9


def test_report_files_and_flip_table(tmp_path, case):
    s = audit(str(tmp_path / "out"), str(tmp_path / "man.csv"), tmp_path / "rep", Config(), top=20,
              with_frames=False)
    issues = pq.read_table(tmp_path / "rep" / "issues.parquet")
    assert issues.num_rows == s["counts"]["issues"] > 20
    assert issues.column("rank").to_pylist() == list(range(1, issues.num_rows + 1))
    scores = issues.column("quality_score").to_pylist()
    assert scores == sorted(scores)
    saved = json.loads((tmp_path / "rep" / "audit.json").read_text())
    assert saved["method"]["ranked_by"] == "cleanlab confident learning" and "LabelInspector" in saved["method"]["api"]
    pred = case.probs.argmax(axis=1)
    table = np.array(saved["flips"]["counts"])
    for i in range(7):
        for j in range(7):
            assert table[i, j] == np.sum((case.original == i) & (pred == j))
    assert saved["flips"]["flips"] == int(np.sum(case.original != pred))
    html = (tmp_path / "rep" / "index.html").read_text()
    assert html.count('"clip_id"') == 20


def test_flip_table_by_hand():
    labels = ("happy", "sad", "neutral")
    original = np.array([0, 0, 1, 1, 2, 0, -1], np.int8)
    new = np.array([2, 0, 2, -1, 2, -2, 0], np.int8)  # -1 outside the set, -2 no prediction
    f = flip_table(original, new, labels)
    assert f["counts"] == [[1, 0, 1, 0], [0, 0, 1, 1], [0, 0, 1, 0]]
    assert f["per_class"]["sad"] == {"clips": 2, "flipped": 2, "share_flipped": 1.0}
    assert f["sink"] == {"label": "neutral", "flips_in": 2, "share_of_flips": 2 / 3}


def test_two_config_hashes_are_refused_and_one_is_picked(tmp_path, case):
    synthetic.write_predictions(tmp_path / "out", case, DFEW, config_hash="otherhash000000", rows=slice(0, 300))
    with pytest.raises(AuditInputError) as e:
        open_predictions(str(tmp_path / "out"), Config())
    msg = str(e.value)
    assert "synthetic0000000 (2000 rows)" in msg and "otherhash000000 (300 rows)" in msg and "--config-hash" in msg
    assert "\n" not in msg
    p = open_predictions(str(tmp_path / "out"), Config(), "otherhash000000")
    assert p.rows == 300 and sum(b.num_rows for b in p.batches(["clip_id"])) == 300


def test_labels_only_falls_back_to_flips_and_says_so(tmp_path):
    (tmp_path / "man.csv").write_text("clip_id,uri,label\na,a.mp4,happy\nb,b.mp4,sad\nc,c.mp4,hapy\nd,d.mp4,sad\n")
    (tmp_path / "pred.csv").write_text("clip_id,label\na,happy\nb,neutral\nc,sad\nx,sad\n")
    s = audit(str(tmp_path / "pred.csv"), str(tmp_path / "man.csv"), tmp_path / "rep", Config(), with_frames=False)
    assert s["method"]["ranked_by"] == "flips only" and "distributions" in s["method"]["why"]
    assert pq.read_table(tmp_path / "rep" / "issues.parquet").column("clip_id").to_pylist() == ["b"]
    p = s["problems"]
    assert p["not_in_manifest"] == {"count": 1, "examples": ["x"]}
    assert p["no_prediction"] == {"count": 1, "examples": ["d"]}
    assert p["manifest_label_outside_set"]["count"] == 1
    assert "man.csv: line 4: c: label 'hapy'" in p["manifest_label_outside_set"]["examples"][0]


def test_against_another_run(tmp_path, case):
    other = synthetic.Case(case.truth, case.original, case.noisy,
                           np.roll(case.probs, 1, axis=1) * 0.2 + case.probs * 0.8, case.ids)
    rng = np.random.default_rng(0)
    flip = rng.random(len(case.ids)) < 0.15
    other.probs[flip] = np.roll(other.probs[flip], 1, axis=1)
    synthetic.write_predictions(tmp_path / "other", other, DFEW, config_hash="model2000000000")
    synthetic.write_predictions(tmp_path / "other", case, DFEW, config_hash="model3000000000", rows=slice(0, 9))
    with pytest.raises(AuditInputError, match="pick one with --against-config-hash"):
        audit(str(tmp_path / "out"), str(tmp_path / "man.csv"), tmp_path / "rep", Config(),
              against=str(tmp_path / "other"), with_frames=False)
    s = audit(str(tmp_path / "out"), str(tmp_path / "man.csv"), tmp_path / "rep", Config(),
              against=str(tmp_path / "other"), against_config_hash="model2000000000", with_frames=False)
    a, b = case.probs.argmax(1), other.probs.argmax(1)
    assert s["against"]["cohen_kappa"] == pytest.approx(cohen_kappa_score(a, b))
    assert s["against"]["agree"] == int((a == b).sum())
    issues = pq.read_table(tmp_path / "rep" / "issues.parquet").to_pylist()
    both_leave = (a != b) & (a != case.original) & (b != case.original)
    assert [r["disagreement"] for r in issues[: int(both_leave.sum())]] == [2] * int(both_leave.sum())
    assert issues[int(both_leave.sum())]["disagreement"] == 1


def test_a_distribution_of_another_label_order_is_mapped(tmp_path):
    from emodist.audit.read import distributions

    b = pa.record_batch({"label_names": pa.array([["happy", "sad"], ["sad", "happy"], None]),
                         "probs": pa.array([[0.8, 0.2], [0.6, 0.4], None], pa.list_(pa.float32()))})
    d = distributions(b, ("happy", "sad"))
    np.testing.assert_allclose(d[:2], [[0.8, 0.2], [0.4, 0.6]], atol=1e-6)
    assert np.isnan(d[2]).all()


def test_a_repeated_prediction_counts_once(tmp_path):
    (tmp_path / "man.csv").write_text("clip_id,uri,label\na,a.mp4,happy\nb,b.mp4,sad\n")
    names = list(DFEW)
    rows = [("a", "happy", [0.9, 0.02, 0.02, 0.02, 0.02, 0.01, 0.01]),
            ("a", "sad", [0.02, 0.9, 0.02, 0.02, 0.02, 0.01, 0.01]),  # the same clip again, in the same part
            ("b", "sad", [0.02, 0.9, 0.02, 0.02, 0.02, 0.01, 0.01])]
    pq.write_table(pa.table({"clip_id": [r[0] for r in rows], "label": [r[1] for r in rows],
                             "label_names": [names] * 3, "probs": pa.array([r[2] for r in rows], pa.list_(pa.float32()))}),
                   tmp_path / "pred.parquet")
    cfg = Config()
    r = rank(open_predictions(str(tmp_path / "pred.parquet"), cfg), read_labels(str(tmp_path / "man.csv"), cfg, DFEW))
    assert r.problems["duplicate_prediction"].count == 1 and r.problems["duplicate_prediction"].examples == ["a"]
    assert r.pred.tolist() == [0, 1]  # the first row of 'a' counts
    assert r.score[0] == pytest.approx(0.9, abs=1e-6)
