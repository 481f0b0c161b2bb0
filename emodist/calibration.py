"""How far the stored distributions can be trusted as probabilities, for `emodist eval`.

Expected calibration error (equal-width confidence bins, Guo et al. 2017), the
multi-class Brier score, the negative log-likelihood, a reliability diagram, and
temperature scaling: one T fitted on a labeled calibration manifest (`--calibrate-on`)
by minimising the NLL of softmax(log p / T), reported before and after on the evaluated
clips. The distributions are the rows' `probs` (what the stored label is the argmax of).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

BINS = 15
T_MIN, T_MAX = 0.02, 50.0  # temperature search range
RELIABILITY_PNG = "reliability.png"
_FLOOR = 1e-12  # log(0) guard: a class given exactly 0 would make the NLL infinite


@dataclass
class Labeled:
    """Distributions (n, L) of clips with a known label, and those labels."""
    probs: np.ndarray
    truth: np.ndarray


def ece(probs: np.ndarray, truth: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: the count-weighted gap between accuracy and mean
    confidence (the top probability) over equal-width confidence bins."""
    conf, hit = probs.max(axis=1), probs.argmax(axis=1) == truth
    k = np.minimum((conf * bins).astype(int), bins - 1)
    n = np.bincount(k, minlength=bins)
    gap = np.abs(np.bincount(k, hit, bins) - np.bincount(k, conf, bins))
    return float(gap.sum() / max(len(truth), 1)) if n.sum() else 0.0


def brier(probs: np.ndarray, truth: np.ndarray) -> float:
    """Mean over clips of sum_j (p_j - [j = truth])^2 (0 best, 2 worst)."""
    onehot = np.eye(probs.shape[1])[truth]
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def nll(probs: np.ndarray, truth: np.ndarray) -> float:
    return float(-np.log(np.maximum(probs[np.arange(len(truth)), truth], _FLOOR)).mean())


def scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): T > 1 softens an overconfident model, T < 1 sharpens."""
    z = np.log(np.maximum(probs, _FLOOR)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(probs: np.ndarray, truth: np.ndarray) -> float:
    """The T that minimises the NLL on the calibration clips (searched over log T)."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(lambda lt: nll(scale(probs, float(np.exp(lt))), truth),
                          bounds=(np.log(T_MIN), np.log(T_MAX)), method="bounded")
    return float(np.exp(res.x))


def scores(probs: np.ndarray, truth: np.ndarray, bins: int = BINS) -> dict:
    return {"ece": ece(probs, truth, bins), "brier": brier(probs, truth), "nll": nll(probs, truth)}


def reliability(probs: np.ndarray, truth: np.ndarray, bins: int = BINS) -> list[dict]:
    """Per non-empty bin: its range, clips, mean confidence and accuracy."""
    conf, hit = probs.max(axis=1), probs.argmax(axis=1) == truth
    k = np.minimum((conf * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        m = k == b
        if m.any():
            out.append({"low": b / bins, "high": (b + 1) / bins, "clips": int(m.sum()),
                        "confidence": float(conf[m].mean()), "accuracy": float(hit[m].mean())})
    return out


def report(evaluated: Labeled, calibration: Labeled | None, calibrate_on: str | None, bins: int = BINS) -> dict:
    """metrics.json's `calibration`: before (and after temperature scaling, when a
    calibration manifest is given) on the evaluated clips."""
    out = {"clips": len(evaluated.truth), "bins": bins, "distribution_column": "probs",
           "before": scores(evaluated.probs, evaluated.truth, bins),
           "reliability_before": reliability(evaluated.probs, evaluated.truth, bins)}
    if calibration is not None and len(calibration.truth):
        t = fit_temperature(calibration.probs, calibration.truth)
        after = scale(evaluated.probs, t)
        if not T_MIN * 1.01 < t < T_MAX / 1.01:
            out["temperature_note"] = (f"T = {t:.3g} is at the search bound [{T_MIN}, {T_MAX}]: the distributions say "
                                       "little about the calibration labels (too few clips, or a model that misses)")
        out |= {"temperature": t, "fitted_on": calibrate_on, "calibration_clips": len(calibration.truth),
                "after": scores(after, evaluated.truth, bins),
                "reliability_after": reliability(after, evaluated.truth, bins)}
    return out


def plot_reliability(cal: dict, path: Path) -> None:
    """Accuracy against confidence per bin, before (and after) temperature scaling."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5), dpi=100)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1, label="perfect calibration")
    for key, name, colour in (("reliability_before", "stored", "#d1342f"), ("reliability_after", "temperature-scaled", "#3b6fd8")):
        bins = cal.get(key)
        if bins:
            phase = key.split("_")[1]
            ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", color=colour,
                    label=f"{name} (ECE {cal[phase]['ece']:.3f})"
                    + (f", T={cal['temperature']:.2f}" if phase == "after" else ""))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability ({cal['clips']} clips, {cal['bins']} bins)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def for_eval(predictions: str, labels_uri: str, cfg, *, calibrate_on: str | None = None,
             prevalence: bool = False, config_hash: str | None = None, bootstrap: int = 1000,
             seed: int = 0, level: float = 0.95) -> tuple[dict | None, dict | None, list[str]]:
    """`emodist eval`'s calibration and class-share blocks (None when they cannot be
    computed), and notes saying why not. Predictions are read once, batch by batch."""
    from emodist import schema as col
    from emodist.audit.read import distributions, label_codes, open_predictions, read_labels
    from emodist.labels import resolve_label_set

    labels = resolve_label_set(cfg.labels)
    preds = open_predictions(predictions, cfg, config_hash)
    notes: list[str] = []
    ids, probs, pred = [], [], []
    for b in preds.batches([col.CLIP_ID, preds.pred_column, col.LABEL_NAMES, col.PROBS]):
        ids.append(b.column(col.CLIP_ID).cast("string"))
        pred.append(label_codes(b.column(preds.pred_column), labels))
        if preds.has_distributions:
            probs.append(distributions(b, labels))
    import pyarrow as pa

    id_arr = pa.concat_arrays(ids) if ids else pa.array([], pa.string())
    pred_a = np.concatenate(pred) if pred else np.zeros(0, np.int64)
    probs_a = np.concatenate(probs) if probs else None
    ok = np.isfinite(probs_a).all(axis=1) if probs_a is not None else np.zeros(len(pred_a), bool)

    def labeled(uri: str, need_probs: bool):
        man = read_labels(uri, cfg, labels)
        m = man.locate(id_arr)
        keep = (m >= 0) & (man.codes[np.where(m >= 0, m, 0)] >= 0)
        if need_probs:
            keep &= ok
        rows = np.flatnonzero(keep)
        _, uniq = np.unique(m[rows], return_index=True)  # one row per clip
        rows = rows[uniq]
        return rows, man.codes[m[rows]].astype(np.int64)

    cal_block = prev_block = None
    cal_rows = cal_truth = None
    if probs_a is None or not ok.any():
        notes.append(f"calibration: the predictions carry no {col.LABEL_NAMES}/{col.PROBS}; ECE and Brier need them")
    else:
        rows, truth = labeled(labels_uri, True)
        evaluated = Labeled(probs_a[rows], truth)
        calib = None
        if calibrate_on:
            cal_rows, cal_truth = labeled(calibrate_on, True)
            calib = Labeled(probs_a[cal_rows], cal_truth)
            if not len(cal_truth):
                notes.append(f"calibration: no clip of {calibrate_on} has a prediction with a distribution; "
                             "no temperature fitted")
            elif storage_same(calibrate_on, labels_uri):
                notes.append("calibration: --calibrate-on is the evaluated manifest: the 'after' figures are "
                             "fitted on the clips they score (optimistic); pass a held-out manifest")
        if len(truth):
            cal_block = report(evaluated, calib, calibrate_on)
    if prevalence:
        if not calibrate_on:
            notes.append("prevalence: adjusted shares need a labeled calibration subset (--calibrate-on MANIFEST)")
        else:
            from emodist import prevalence as prev

            rows, truth = labeled(calibrate_on, False)
            valid = pred_a >= 0
            if not len(truth) or not valid.any():
                notes.append(f"prevalence: no clip of {calibrate_on} has a prediction in the label set")
            else:
                cp = np.where(pred_a[rows] >= 0, pred_a[rows], 0)
                corpus_probs = probs_a[valid] if probs_a is not None and ok[valid].all() else None
                if corpus_probs is None:
                    notes.append("prevalence: not every prediction carries a distribution; EM skipped, "
                                 "the confusion-matrix correction is the adjusted share")
                cal_probs = probs_a[rows] if corpus_probs is not None and ok[rows].all() else None
                prev_block = prev.report(labels, pred_a[valid], corpus_probs, truth, cp, calibrate_on,
                                         bootstrap=bootstrap, seed=seed, level=level, cal_probs=cal_probs)
    return cal_block, prev_block, notes


def storage_same(a: str, b: str) -> bool:
    from emodist import storage

    return storage.absolute(a) == storage.absolute(b)


def format_table(cal: dict | None, prev: dict | None, notes: list[str]) -> str:
    """Terminal lines for eval: calibration before/after, class shares, and the notes."""
    lines = []
    if cal:
        phases = [p for p in ("before", "after") if p in cal]
        head = "  calibration" + (f" (temperature {cal['temperature']:.3f} from {cal['fitted_on']})"
                                  if "after" in cal else "")
        lines.append(head + ": " + "; ".join(
            f"{m} " + " -> ".join(f"{cal[p][m]:.4f}" for p in phases) for m in ("ece", "brier", "nll")))
    if prev:
        from emodist.prevalence import format_table as shares_table

        lines.append(shares_table(prev))
    lines += [f"  note: {n}" for n in notes + ([cal["temperature_note"]] if cal and "temperature_note" in cal else [])]
    return "\n".join(lines)
