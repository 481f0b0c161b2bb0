"""Class shares of a corpus, raw and adjusted with a labeled calibration subset.

A classifier's predicted shares are biased towards its favourite classes (the neutral
sink). Two standard corrections, both fitted on the calibration subset:
- confusion-matrix correction (adjusted classify-and-count): the corpus's predicted
  shares q satisfy q = C^T pi, with C[i, j] = P(predicted j | true i) from the subset;
  pi is the non-negative least-squares solution, normalised;
- EM re-estimation of the prior (Saerens, Latinne and Decaestecker, Neural Computation
  2002), when distributions are stored: posteriors are re-weighted by pi / pi_source and
  renormalised, pi re-estimated as their mean, until it stops moving; pi_source, the
  prior the distributions embody, is their mean over the calibration subset.
Percentile bootstrap intervals resample the calibration subset and the corpus together.
"""
from __future__ import annotations

import numpy as np

EM_TOL = 1e-8
EM_MAX_ITER = 1000


def shares(codes: np.ndarray, L: int, weights: np.ndarray | None = None) -> np.ndarray:
    c = np.bincount(codes, weights=weights, minlength=L)[:L].astype(np.float64)
    return c / c.sum() if c.sum() else c


def confusion_rates(truth: np.ndarray, pred: np.ndarray, L: int, weights: np.ndarray | None = None) -> np.ndarray:
    """C[i, j] = P(predicted j | true i); a class absent from the subset keeps the identity row."""
    c = np.bincount(truth * L + pred, weights=weights, minlength=L * L).reshape(L, L).astype(np.float64)
    rows = c.sum(axis=1, keepdims=True)
    return np.where(rows > 0, c / np.where(rows > 0, rows, 1), np.eye(L))


def confusion_corrected(pred_shares: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """The pi >= 0 (summing to 1) that best explains the predicted shares through C."""
    from scipy.optimize import nnls

    pi, _ = nnls(rates.T, pred_shares)
    return pi / pi.sum() if pi.sum() > 0 else pred_shares


def em_prior(posteriors: np.ndarray, source_prior: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Saerens et al. 2002: the corpus's class prior, and the iterations it took."""
    w = np.ones(len(posteriors)) if weights is None else weights
    src = np.maximum(source_prior, 1e-12)
    pi = (w @ posteriors) / w.sum()
    for it in range(1, EM_MAX_ITER + 1):
        adj = posteriors * (pi / src)
        adj /= adj.sum(axis=1, keepdims=True)
        new = (w @ adj) / w.sum()
        if np.abs(new - pi).max() < EM_TOL:
            return new, it
        pi = new
    return pi, EM_MAX_ITER


def source_prior(cal_truth: np.ndarray, cal_probs: np.ndarray | None, L: int,
                 kw: np.ndarray | None = None) -> np.ndarray:
    """The prior the distributions embody: their mean over the calibration subset; without
    them, its label shares add-one smoothed. Never a bare label share: a class the subset
    lacks would get pi / 0 and swallow the corpus."""
    if cal_probs is not None and len(cal_probs):
        w = np.ones(len(cal_probs)) if kw is None else kw
        return np.maximum((w @ cal_probs) / w.sum(), 1e-6)
    counts = np.bincount(cal_truth, weights=kw, minlength=L)[:L]
    return (counts + 1) / (counts.sum() + L)


def estimate(corpus_pred: np.ndarray, corpus_probs: np.ndarray | None, cal_truth: np.ndarray,
             cal_pred: np.ndarray, L: int, cw: np.ndarray | None = None, kw: np.ndarray | None = None,
             cal_probs: np.ndarray | None = None) -> dict:
    """raw, confusion-corrected and (with distributions) EM shares; cw/kw weight the
    corpus and calibration rows (the bootstrap's resampling)."""
    raw = shares(corpus_pred, L, cw)
    out = {"raw": raw, "confusion_corrected": confusion_corrected(raw, confusion_rates(cal_truth, cal_pred, L, kw))}
    if corpus_probs is not None:
        out["em"], _ = em_prior(corpus_probs, source_prior(cal_truth, cal_probs, L, kw), cw)
    return out


def report(labels: tuple[str, ...], corpus_pred: np.ndarray, corpus_probs: np.ndarray | None,
           cal_truth: np.ndarray, cal_pred: np.ndarray, calibrate_on: str, *, bootstrap: int = 1000,
           seed: int = 0, level: float = 0.95, cal_probs: np.ndarray | None = None) -> dict:
    """metrics.json's `prevalence`: `raw` and `adjusted` (label -> share; adjusted is EM
    when distributions are stored, else the confusion-matrix correction), every estimate,
    and bootstrap intervals."""
    L = len(labels)
    point = estimate(corpus_pred, corpus_probs, cal_truth, cal_pred, L, cal_probs=cal_probs)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[np.ndarray]] = {k: [] for k in point}
    for _ in range(bootstrap):
        # resampling with replacement = integer weights: how often each row was drawn
        cw = np.bincount(rng.integers(0, len(corpus_pred), len(corpus_pred)), minlength=len(corpus_pred)).astype(float)
        kw = np.bincount(rng.integers(0, len(cal_truth), len(cal_truth)), minlength=len(cal_truth)).astype(float)
        for k, v in estimate(corpus_pred, corpus_probs, cal_truth, cal_pred, L, cw, kw, cal_probs).items():
            draws[k].append(v)
    named = lambda v: {lab: float(v[j]) for j, lab in enumerate(labels)}  # noqa: E731
    adjusted = "em" if "em" in point else "confusion_corrected"
    out = {
        "raw": named(point["raw"]), "adjusted": named(point[adjusted]),
        "adjusted_method": {"em": "EM prior re-estimation (Saerens et al. 2002)",
                            "confusion_corrected": "confusion-matrix correction"}[adjusted],
        "estimates": {k: named(v) for k, v in point.items()},
        "corpus_clips": int(len(corpus_pred)), "calibration_clips": int(len(cal_truth)),
        "calibrate_on": calibrate_on, "bootstrap": bootstrap, "ci_level": level,
    }
    if bootstrap:
        lo, hi = 50 * (1 - level), 50 * (1 + level)
        out["ci"] = {k: {lab: [float(np.percentile(np.array(d)[:, j], lo)), float(np.percentile(np.array(d)[:, j], hi))]
                         for j, lab in enumerate(labels)} for k, d in draws.items()}
    return out


def format_table(p: dict) -> str:
    """Lines for the terminal: each class's raw and adjusted share with its interval."""
    ci = p.get("ci", {})
    key = "em" if "em" in p["estimates"] else "confusion_corrected"
    lines = [f"  class shares of {p['corpus_clips']} clips, adjusted on {p['calibration_clips']} labeled clips "
             f"({p['adjusted_method']})",
             f"  {'class':<16}{'raw':>8}{'':>18}{'adjusted':>10}"]
    for lab, r in p["raw"].items():
        band = lambda k: (f"[{ci[k][lab][0]:.3f}, {ci[k][lab][1]:.3f}]" if k in ci else "")  # noqa: E731
        lines.append(f"  {lab:<16}{r:>8.3f} {band('raw'):>17}{p['adjusted'][lab]:>10.3f} {band(key)}")
    return "\n".join(lines)
