"""ECE, Brier and temperature scaling by hand and on a model made overconfident on
purpose; `emodist eval --calibrate-on --prevalence` writes them to metrics.json."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from emodist import calibration as cal
from emodist.audit import synthetic
from emodist.cli import app
from emodist.labels import DFEW


def test_ece_and_brier_by_hand():
    p = np.array([[0.9, 0.1], [0.6, 0.4]])
    t = np.array([0, 1])
    # bin 9: confidence 0.9, right (gap 0.1); bin 6: confidence 0.6, wrong (gap 0.6)
    assert cal.ece(p, t, bins=10) == pytest.approx(0.35)
    assert cal.brier(p, t) == pytest.approx(((0.1**2 + 0.1**2) + (0.6**2 + 0.6**2)) / 2)
    assert cal.nll(p, t) == pytest.approx(-(np.log(0.9) + np.log(0.4)) / 2)


def test_temperature_recovers_an_overconfident_model():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, (20000, 5))
    true_p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    truth = np.array([rng.choice(5, p=row) for row in true_p])
    stored = cal.scale(true_p, 1 / 3)  # three times too sharp
    t = cal.fit_temperature(stored, truth)
    assert t == pytest.approx(3.0, rel=0.1)
    assert cal.ece(cal.scale(stored, t), truth) < 0.3 * cal.ece(stored, truth)
    assert cal.nll(cal.scale(stored, t), truth) < cal.nll(stored, truth)


def test_eval_writes_calibration_and_prevalence(tmp_path):
    case = synthetic.make_case(1500, DFEW, seed=2, noise=0.0, strength=1.5)
    synthetic.write_predictions(tmp_path / "out", case, DFEW)
    synthetic.write_manifest(tmp_path / "all.csv", case, DFEW)
    half = synthetic.Case(case.truth[:500], case.original[:500], case.noisy[:500], case.probs[:500], case.ids[:500])
    synthetic.write_manifest(tmp_path / "calib.csv", half, DFEW)
    run = CliRunner().invoke(app, ["eval", "-p", str(tmp_path / "out"), "-l", str(tmp_path / "all.csv"),
                                   "--calibrate-on", str(tmp_path / "calib.csv"), "--prevalence",
                                   "--bootstrap", "50", "--report", str(tmp_path / "rep")])
    assert run.exit_code == 0, run.output
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    c = m["calibration"]
    assert c["clips"] == 1500 and c["calibration_clips"] == 500 and c["temperature"] > 0
    assert c["after"]["nll"] <= c["before"]["nll"] + 1e-3
    p = m["prevalence"]
    assert set(p["raw"]) == set(DFEW) and sum(p["raw"].values()) == pytest.approx(1)
    assert sum(p["adjusted"].values()) == pytest.approx(1)
    pred = case.probs.argmax(axis=1)
    assert p["raw"]["happy"] == pytest.approx(np.mean(pred == 0))
    assert "EM prior" in p["adjusted_method"]
    for lab in DFEW:
        lo, hi = p["ci"]["em"][lab]
        assert lo <= p["adjusted"][lab] + 1e-9 and p["adjusted"][lab] <= hi + 1e-9
    assert (tmp_path / "rep" / "reliability.png").stat().st_size > 0
    assert "## Calibration" in (tmp_path / "rep" / "report.md").read_text()
    assert "calibration (temperature" in run.output and "class shares of 1500 clips" in run.output


def test_eval_refuses_two_configs_until_config_hash_picks_one(tmp_path):
    case = synthetic.make_case(200, DFEW, seed=7)
    synthetic.write_predictions(tmp_path / "out", case, DFEW)
    synthetic.write_predictions(tmp_path / "out", case, DFEW, config_hash="second000000000", rows=slice(0, 80))
    synthetic.write_manifest(tmp_path / "m.csv", case, DFEW)
    args = ["eval", "-p", str(tmp_path / "out"), "-l", str(tmp_path / "m.csv"), "--bootstrap", "0"]
    bad = CliRunner().invoke(app, args)
    assert bad.exit_code == 2 and "second000000000 (80 rows)" in bad.output and "--config-hash" in bad.output
    ok = CliRunner().invoke(app, args + ["--config-hash", "second000000000", "--report", str(tmp_path / "rep")])
    assert ok.exit_code == 0, ok.output
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert m["n"] == 80 and m["calibration"]["clips"] == 80
