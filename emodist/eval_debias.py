"""The debiasing comparison of `emodist eval`: when predictions carry the model's raw
distributions, the scores of the stored label, the raw argmax and each post-hoc method
of emodist/debias.py on the same clips.

Logit adjustment takes its prior from training data only (`--prior-from` or
`labeler.prior`), never from the evaluated labels.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from emodist import debias
from emodist import schema as col
from emodist import storage
from emodist.eval_metrics import scores, sink
from emodist.eval_result import EvalInputError, MethodScores, Problem
from emodist.io.source import read_manifest
from emodist.labels import canonical


def distributions(ids: list[str], names_col: list, probs_col: list, labels: Sequence[str],
                  bad: Problem) -> np.ndarray:
    """(N, L) raw distributions in label-set order; rows that cannot be used are NaN."""
    index = {n: i for i, n in enumerate(labels)}
    out = np.full((len(probs_col), len(labels)), np.nan)
    for i, (names, probs) in enumerate(zip(names_col, probs_col)):
        if not names or not probs or len(names) != len(probs):
            bad.add(f"{ids[i]}: label_names/probs_raw missing or of different lengths")
            continue
        row = np.zeros(len(labels))
        for n, v in zip(names, probs):
            j = index.get(canonical(n))
            if j is not None:
                row[j] += v or 0.0
        if not np.all(np.isfinite(row)) or row.min() < 0 or row.sum() <= 0:
            bad.add(f"{ids[i]}: no usable probability on the label set")
            continue
        out[i] = row
    return out


def training_prior(prior_from: str | None, manifest_uri: str, cfg, labels: Sequence[str]) -> tuple[np.ndarray | None, str]:
    """(prior, where it comes from) for logit adjustment, or (None, why it is skipped).
    Never the evaluated manifest's own class frequencies: a prior counted from the test
    labels tells the debiased figure the answers."""
    if prior_from:
        if storage.absolute(prior_from) == storage.absolute(manifest_uri):
            return None, (f"--prior-from is the evaluated manifest itself ({manifest_uri}): its class "
                          "frequencies are the test labels; pass the training manifest")
        try:
            man, _ = read_manifest(prior_from, cfg)
        except storage.SourceError as exc:
            raise EvalInputError(str(exc)) from None
        try:
            shares = debias.prior_from_labels(man.column(col.REF_LABEL).to_pylist(), labels, smoothing=0)
        except ValueError:
            raise EvalInputError(f"{prior_from}: no label in the label set {list(labels)}; pass a training "
                                 "manifest with a 'label' column (--prior-from)") from None
        # Smoothed: a class the training set lacks must not win every clip (debias.smooth_prior).
        return debias.smooth_prior(shares), f"the class frequencies of {prior_from}"
    prior = getattr(getattr(cfg, "labeler", None), "prior", None)
    if prior is not None and len(prior) == len(labels):
        return debias.smooth_prior(prior), "labeler.prior"
    return None, ("no training prior: pass --prior-from TRAIN_MANIFEST or set labeler.prior (the evaluated "
                  "manifest's own class frequencies would leak its labels)")


def _compare(dists: np.ndarray, ok: np.ndarray, rows: np.ndarray, t: np.ndarray, stored: np.ndarray,
             labels: Sequence[str], prior: np.ndarray | None, prior_note: str, content_free: object,
             tau: float = 1.0) -> list[MethodScores]:
    """Metrics of the stored label, raw argmax and each post-hoc debias method on the
    evaluated rows that have a distribution. Batch calibration sees every prediction."""
    sel = ok[rows]
    tt, n = t[sel], int(sel.sum())
    pos = np.cumsum(ok) - 1  # row in the ok-only matrix
    out = [_method("stored label", tt, stored[sel], labels)]
    full = dists[ok]
    kws: dict[str, dict] = {"none": {}, "batch": {}}
    if prior is not None:
        kws["logit_adjust"] = {"prior": prior, "tau": tau}
    if content_free is not None:
        kws["contextual"] = {"content_free": content_free}
    skipped = {"contextual": "no content-free distribution given (content_free=)", "logit_adjust": prior_note}
    for method in debias.METHODS:
        name = "raw" if method == "none" else method
        if method not in kws:
            out.append(MethodScores(name, n, skipped=skipped[method]))
            continue
        adjusted = debias.apply(method, full, **kws[method])
        out.append(_method(name, tt, adjusted.argmax(axis=1)[pos[rows[sel]]], labels))
    return out


def _method(name: str, t: np.ndarray, p: np.ndarray, labels: Sequence[str]) -> MethodScores:
    uar, war, f1 = scores(t, p)
    return MethodScores(name, len(t), uar, war, f1, sink(t, p, labels))


def content_free_vector(cf: object, labels: Sequence[str]) -> np.ndarray | None:
    """A list in label-set order, a {label: p} mapping, or either as JSON text or a JSON file."""
    if isinstance(cf, str | Path):
        text = str(cf).strip()
        cf = json.loads(text if text[:1] in "[{" else Path(text).read_text())
    if cf is None or not isinstance(cf, Mapping):
        return None if cf is None else np.asarray(cf, dtype=np.float64)
    vec = {canonical(k): float(v) for k, v in cf.items()}
    missing = [lab for lab in labels if lab not in vec]
    if missing:
        raise EvalInputError(f"content_free has no probability for {missing}; give one per label")
    return np.array([vec[lab] for lab in labels])


def comparison(table: pa.Table, ids: list[str], pred_first: dict[str, int], rows: np.ndarray,
               t: np.ndarray, p: np.ndarray, labels: Sequence[str], bad: Problem,
               prior: np.ndarray | None, prior_note: str, content_free: object,
               cfg) -> tuple[list[MethodScores], str]:
    """(one MethodScores per method, a note saying what was compared) for the scored rows
    `rows` of `table` (truth `t`, stored answers `p`); `pred_first` is the first row of each
    clip id. Rows whose distribution cannot be used are counted in `bad`."""
    n = len(t)
    names = table.column_names
    has_dists = col.PROBS_RAW in names and table.column(col.PROBS_RAW).null_count < len(table)
    if not (has_dists and col.LABEL_NAMES in names):
        return [], f"predictions carry no {col.LABEL_NAMES}/{col.PROBS_RAW}: no debiasing comparison"
    firsts = np.array(sorted(pred_first.values()))
    dists = distributions([ids[i] for i in firsts],
                          table.column(col.LABEL_NAMES).take(firsts).to_pylist(),
                          table.column(col.PROBS_RAW).take(firsts).to_pylist(),
                          labels, bad)
    ok = ~np.isnan(dists).any(axis=1)
    local = np.searchsorted(firsts, rows)  # evaluated rows in the deduplicated order
    if not ok[local].any():
        return [], f"predictions carry no {col.LABEL_NAMES}/{col.PROBS_RAW}: no debiasing comparison"
    tau = float(getattr(getattr(cfg, "labeler", None), "tau", 1.0))
    out = _compare(np.nan_to_num(dists), ok, local, t, p, labels, prior, prior_note,
                   content_free_vector(content_free, labels), tau)
    note = (f"{int(ok[local].sum())} of {n} scored clips have {col.PROBS_RAW}; batch calibration "
            f"uses all {int(ok.sum())} predictions; logit adjustment "
            + (f"uses {prior_note} as its prior (tau {tau:g})" if prior is not None else f"skipped: {prior_note}"))
    return out, note
