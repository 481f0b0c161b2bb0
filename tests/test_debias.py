"""Debiasing methods against distributions computed by hand."""
from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from emodist import debias


def test_contextual_calibration_by_hand():
    # [0.6, 0.3, 0.1] / [0.5, 0.25, 0.25] = [1.2, 1.2, 0.4], sum 2.8 -> [3/7, 3/7, 1/7]
    out = debias.contextual_calibration([[0.6, 0.3, 0.1]], [0.5, 0.25, 0.25])
    np.testing.assert_allclose(out, [[3 / 7, 3 / 7, 1 / 7]])
    # several content-free inputs are averaged: mean([.4,.3,.3], [.6,.2,.2]) = [.5,.25,.25]
    out2 = debias.contextual_calibration([[0.6, 0.3, 0.1]], [[0.4, 0.3, 0.3], [0.6, 0.2, 0.2]])
    np.testing.assert_allclose(out2, out)


def test_batch_calibration_by_hand():
    # mean = [0.6, 0.4]; row 1: [0.8/0.6, 0.2/0.4] = [4/3, 1/2] -> [8/11, 3/11]
    # row 2: [0.4/0.6, 0.6/0.4] = [2/3, 3/2] -> [4/13, 9/13]
    out = debias.batch_calibration([[0.8, 0.2], [0.4, 0.6]])
    np.testing.assert_allclose(out, [[8 / 11, 3 / 11], [4 / 13, 9 / 13]])


def test_batch_calibration_uniform_mean_is_identity():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4], [0.2, 0.3, 0.5]])  # column means 1/3
    np.testing.assert_allclose(debias.batch_calibration(p), p)


def test_logit_adjustment_by_hand():
    p = [[0.6, 0.3, 0.1]]
    # tau = 1 is division by the prior: same numbers as contextual calibration above
    np.testing.assert_allclose(debias.logit_adjustment(p, [0.5, 0.25, 0.25]), [[3 / 7, 3 / 7, 1 / 7]])
    # the prior is normalized internally
    np.testing.assert_allclose(debias.logit_adjustment(p, [2, 1, 1]), [[3 / 7, 3 / 7, 1 / 7]])
    # tau = 2: p / prior^2 = [2.4, 4.8, 1.6], sum 8.8 -> [3/11, 6/11, 2/11]
    np.testing.assert_allclose(debias.logit_adjustment(p, [0.5, 0.25, 0.25], tau=2.0), [[3 / 11, 6 / 11, 2 / 11]])
    np.testing.assert_allclose(debias.logit_adjustment(p, [0.5, 0.25, 0.25], tau=0.0), p)


def test_logit_adjustment_uniform_prior_is_identity():
    p = np.random.default_rng(0).dirichlet(np.ones(7), size=20)
    np.testing.assert_allclose(debias.logit_adjustment(p, np.ones(7)), p)
    # a zero probability stays zero instead of becoming NaN
    np.testing.assert_allclose(debias.logit_adjustment([[1.0, 0.0]], [0.9, 0.1]), [[1.0, 0.0]])


def test_prior_from_labels():
    labels = ["happy", "Happiness", "sad", "anger", "bogus", "", None]
    np.testing.assert_allclose(debias.prior_from_labels(labels, ["happy", "sad", "angry"]), [3 / 7, 2 / 7, 2 / 7])
    np.testing.assert_allclose(
        debias.prior_from_labels(labels, ["happy", "sad", "angry"], smoothing=0), [0.5, 0.25, 0.25]
    )
    with pytest.raises(ValueError, match="no label matches"):
        debias.prior_from_labels(["bogus"], ["happy", "sad"], smoothing=0)


def test_average_permutations_by_hand():
    # labels [a, b]; order (a, b) answers [0.7, 0.3]; order (b, a) answers [0.6, 0.4]
    # -> a = (0.7 + 0.4) / 2 = 0.55, b = (0.3 + 0.6) / 2 = 0.45
    out = debias.average_permutations([[0.7, 0.3], [0.6, 0.4]], [[0, 1], [1, 0]])
    np.testing.assert_allclose(out, [[0.55, 0.45]])


def _biased_model(shown: list[str]) -> np.ndarray:
    """A fake VLM: content score per label times a strong bias for the first positions."""
    score = {"happy": 0.5, "sad": 0.3, "neutral": 0.2}
    bias = np.array([3.0, 1.5, 1.0])
    p = np.array([score[s] for s in shown]) * bias
    return p / p.sum()


@pytest.mark.parametrize("order", [["neutral", "happy", "sad"], ["sad", "neutral", "happy"]])
def test_average_permutations_invariant_to_label_order(order):
    def averaged(names: list[str], shuffle_seed: int) -> dict[str, float]:
        perms = [list(p) for p in itertools.permutations(range(len(names)))]
        random.Random(shuffle_seed).shuffle(perms)  # the order of the k answers must not matter
        answers = [_biased_model([names[j] for j in perm]) for perm in perms]
        out = debias.average_permutations(answers, perms)[0]
        return dict(zip(names, out.tolist()))

    base = averaged(["happy", "sad", "neutral"], 0)
    other = averaged(order, 1)
    for name in base:
        assert other[name] == pytest.approx(base[name])
    # a single biased answer depends on the order; the average does not
    assert _biased_model(order)[0] != pytest.approx(base[order[0]])


def test_average_permutations_cancels_pure_position_bias():
    perms = [list(p) for p in itertools.permutations(range(3))]
    answers = [[0.6, 0.3, 0.1]] * len(perms)  # the model only ever prefers position 0
    np.testing.assert_allclose(debias.average_permutations(answers, perms), [[1 / 3] * 3])


def test_apply_dispatch_and_errors():
    p = [[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]
    assert set(debias.METHODS) == {"none", "contextual", "batch", "logit_adjust"}
    np.testing.assert_allclose(debias.apply("none", p), p)
    np.testing.assert_allclose(debias.apply("batch", p), debias.batch_calibration(p))
    np.testing.assert_allclose(
        debias.apply("contextual", p, content_free=[0.5, 0.25, 0.25]),
        debias.contextual_calibration(p, [0.5, 0.25, 0.25]),
    )
    np.testing.assert_allclose(
        debias.apply("logit_adjust", p, prior=[0.5, 0.25, 0.25], tau=0.5),
        debias.logit_adjustment(p, [0.5, 0.25, 0.25], tau=0.5),
    )
    with pytest.raises(ValueError, match="unknown debias method"):
        debias.apply("magic", p)
    with pytest.raises(ValueError, match="needs content_free"):
        debias.apply("contextual", p)
    with pytest.raises(ValueError, match="needs prior"):
        debias.apply("logit_adjust", p)
    with pytest.raises(ValueError, match="batch"):
        debias.apply("batch", p, prior=[1, 1, 1])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: debias.batch_calibration([[0.5, -0.1]]), ">= 0"),
        (lambda: debias.batch_calibration([[0.0, 0.0], [0.5, 0.5]]), "row 0 sums to 0"),
        (lambda: debias.batch_calibration([[1.0]]), "L >= 2"),
        (lambda: debias.contextual_calibration([[0.5, 0.5]], [1.0, 0.0]), "> 0"),
        (lambda: debias.contextual_calibration([[0.5, 0.5]], [0.3, 0.3, 0.4]), "expected shape"),
        (lambda: debias.logit_adjustment([[0.5, 0.5]], [0.5, 0.5], tau=float("nan")), "tau"),
        (lambda: debias.average_permutations([[0.5, 0.5]], [[0, 0]]), "not a permutation"),
        (lambda: debias.average_permutations([[0.5, 0.5]], [[0, 1], [1, 0]]), "disagree"),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_smooth_prior_floors_a_class_without_support_at_the_rarest_supported_one():
    np.testing.assert_allclose(debias.smooth_prior([6, 3, 0, 1]), [6 / 11, 3 / 11, 1 / 11, 1 / 11])
    np.testing.assert_allclose(debias.smooth_prior([0.5, 0.5]), [0.5, 0.5])
    # the unseen class is lifted no more than the rarest seen one: it cannot win every row
    p = np.array([[0.45, 0.45, 0.01, 0.09]] * 3)
    assert (debias.logit_adjustment(p, debias.smooth_prior([6, 3, 0, 1])).argmax(axis=1) != 2).all()
    with pytest.raises(ValueError, match="every class has weight 0"):
        debias.smooth_prior([0, 0])
