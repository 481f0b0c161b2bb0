"""The report folder of `emodist eval --report` (emodist/report.py)."""
from __future__ import annotations

import json

import matplotlib.image as mpimg
import pytest

from emodist.evaluate import evaluate
from emodist.report import write_report
from tests.eval_cases import biased_run


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
