"""The scores of `emodist eval` on encoded labels: UAR, WAR, macro P/R/F1, the per-class
table, the confusion matrix, the "neutral sink" and bootstrap intervals.

Truth `t` and predictions `p` are label-set indices; index len(labels) in `p` is an
answer outside the label set (scored as wrong, its own confusion column).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import sklearn
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from emodist.eval_result import INVALID, ClassMetrics, Sink

METRICS = ("uar", "war", "macro_f1")


@dataclass
class ClassTable:
    """Per-class numbers, the confusion matrix and the macro averages of one evaluation."""
    per_class: list[ClassMetrics]
    confusion: list[list[int]]  # rows: truth in label-set order; columns: `cols`
    cols: list[str]
    macro_precision: float
    macro_recall: float
    macro_f1: float


def scores(t: np.ndarray, p: np.ndarray, w: np.ndarray | None = None) -> tuple[float, float, float]:
    """UAR, WAR, macro-F1; macro over the classes present in the truth."""
    present = np.unique(t)
    _, rec, f1, _ = precision_recall_fscore_support(
        t, p, labels=present, sample_weight=w, zero_division=0.0)
    return float(rec.mean()), float(accuracy_score(t, p, sample_weight=w)), float(f1.mean())


def bootstrap(t: np.ndarray, p: np.ndarray, n_classes: int, b: int, seed: int, level: float) -> dict:
    # Resampling rows equals a multinomial draw over the (truth, pred) cells, so each
    # resample is scored on <= L*(L+1) weighted cells instead of n rows: same law, faster.
    cells, counts = np.unique(t * (n_classes + 1) + p, return_counts=True)
    ct, cp = np.divmod(cells, n_classes + 1)
    draws = np.random.default_rng(seed).multinomial(len(t), counts / len(t), size=b)
    vals = np.empty((b, len(METRICS)))
    with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
        for i, w in enumerate(draws):
            m = w > 0
            vals[i] = scores(ct[m], cp[m], w[m])
    lo, hi = np.percentile(vals, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return {m: [float(lo[j]), float(hi[j])] for j, m in enumerate(METRICS)}


def sink(t: np.ndarray, p: np.ndarray, labels: Sequence[str]) -> Sink:
    pred_counts = np.bincount(p, minlength=len(labels) + 1)[: len(labels)]  # without invalid answers
    c = int(np.argmax(pred_counts))
    ps, ts = pred_counts[c] / len(t), float(np.mean(t == c))
    return Sink(labels[c], float(ps), ts, float(ps / ts) if ts > 0 else None)


def class_table(t: np.ndarray, p: np.ndarray, labels: Sequence[str]) -> ClassTable:
    """Per-class precision/recall/F1 (None where undefined), the confusion matrix with an
    INVALID column only when some answer fell outside the label set, and macro P/R/F1
    over the classes present in the truth."""
    L, n = len(labels), len(t)
    prec, rec, f1, sup = precision_recall_fscore_support(t, p, labels=np.arange(L), zero_division=0.0)
    mp, mr, mf, _ = precision_recall_fscore_support(t, p, labels=np.unique(t), average="macro",
                                                    zero_division=0.0)
    cm = confusion_matrix(t, p, labels=np.arange(L + 1))[:L]
    keep_invalid = bool(cm[:, L].sum())
    per_class = [ClassMetrics(
        labels[j], int(sup[j]), float(sup[j] / n), int(cm[:, j].sum()), float(cm[:, j].sum() / n),
        float(prec[j]) if cm[:, j].sum() else None,
        float(rec[j]) if sup[j] else None,
        float(f1[j]) if sup[j] else None) for j in range(L)]
    return ClassTable(per_class, cm[:, : L + keep_invalid].tolist(),
                      list(labels) + ([INVALID] if keep_invalid else []), float(mp), float(mr), float(mf))
