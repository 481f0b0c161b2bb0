"""The debiasing comparison of `emodist eval` (emodist/eval_debias.py): each method's scores,
rows without a usable distribution, and where logit adjustment takes its prior from."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from emodist import debias
from emodist.evaluate import evaluate
from emodist.labels import DFEW
from tests.eval_cases import FACE_API_ORDER, biased_run, write_manifest, write_run


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


def test_bad_distribution_rows_are_counted(tmp_path):
    ids = ["a", "b", "c"]
    names = ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]
    probs = np.array([[0.9, 0.1, 0, 0, 0, 0, 0], [0.1, 0.9, 0, 0, 0, 0, 0], [0.0] * 7])  # c: all zero
    r = evaluate(write_run(tmp_path / "out", ids, ["happy", "sad", "happy"], names=names, probs=probs),
                 write_manifest(tmp_path / "m.csv", ids, ["happy", "sad", "sad"]), bootstrap=0)
    assert r.problems["bad_distribution"].count == 1
    assert r.problems["bad_distribution"].examples[0].startswith("c:")
    assert {d.method: d.n for d in r.debias}["raw"] == 2 and r.n == 3


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
