"""Class shares under a prior shift: the confusion-matrix correction and EM (Saerens et
al. 2002) recover the corpus's shares that the raw predicted shares miss."""
from __future__ import annotations

import numpy as np
import pytest

from emodist import prevalence as prev


def _clips(prior, n, rng, means, source_prior):
    """True classes drawn from `prior`; posteriors calibrated under `source_prior`."""
    y = rng.choice(len(prior), size=n, p=prior)
    x = means[y] + rng.normal(0, 1, (n, means.shape[1]))
    loglik = -0.5 * ((x[:, None, :] - means[None]) ** 2).sum(axis=2)
    post = np.exp(loglik - loglik.max(axis=1, keepdims=True)) * source_prior
    return y, post / post.sum(axis=1, keepdims=True)


def test_shifted_prior_is_recovered():
    rng = np.random.default_rng(0)
    L = 4
    means = np.eye(L) * 1.6
    source = np.full(L, 1 / L)
    target = np.array([0.55, 0.25, 0.15, 0.05])
    cal_y, cal_p = _clips(source, 4000, rng, means, source)
    y, p = _clips(target, 20000, rng, means, source)
    est = prev.estimate(p.argmax(1), p, cal_y, cal_p.argmax(1), L, cal_probs=cal_p)
    raw_err = np.abs(est["raw"] - target).max()
    assert raw_err > 0.05  # the classifier's own shares are pulled towards uniform
    assert np.abs(est["em"] - target).max() < 0.02
    assert np.abs(est["confusion_corrected"] - target).max() < 0.03


def test_report_names_every_class_and_brackets_the_estimate():
    rng = np.random.default_rng(1)
    means = np.eye(3) * 2.0
    cal_y, cal_p = _clips(np.full(3, 1 / 3), 600, rng, means, np.full(3, 1 / 3))
    y, p = _clips(np.array([0.6, 0.3, 0.1]), 3000, rng, means, np.full(3, 1 / 3))
    r = prev.report(("happy", "sad", "neutral"), p.argmax(1), None, cal_y, cal_p.argmax(1), "cal.csv",
                    bootstrap=100, seed=0)
    assert r["adjusted_method"] == "confusion-matrix correction" and "em" not in r["estimates"]
    assert sum(r["adjusted"].values()) == pytest.approx(1)
    for lab, v in r["adjusted"].items():
        lo, hi = r["ci"]["confusion_corrected"][lab]
        assert lo <= v <= hi and hi - lo < 0.2


def test_em_keeps_the_prior_when_nothing_shifted():
    rng = np.random.default_rng(2)
    means = np.eye(3) * 2.0
    prior = np.array([0.5, 0.3, 0.2])
    y, p = _clips(prior, 20000, rng, means, prior)
    pi, iters = prev.em_prior(p, prior)
    assert np.abs(pi - prior).max() < 0.02 and iters < prev.EM_MAX_ITER


def test_a_class_missing_from_the_calibration_subset_does_not_swallow_the_corpus():
    rng = np.random.default_rng(3)
    means = np.eye(3) * 2.0
    prior = np.array([0.5, 0.4, 0.1])
    cal_y, cal_p = _clips(prior, 300, rng, means, prior)
    keep = cal_y != 2  # the subset has no clip of class 2
    y, p = _clips(prior, 5000, rng, means, prior)
    est = prev.estimate(p.argmax(1), p, cal_y[keep], cal_p[keep].argmax(1), 3, cal_probs=cal_p[keep])
    assert np.abs(est["em"] - prior).max() < 0.15
    without = prev.estimate(p.argmax(1), p, cal_y[keep], cal_p[keep].argmax(1), 3)  # smoothed label shares
    assert np.all(np.isfinite(without["em"])) and without["em"][2] < 0.7
