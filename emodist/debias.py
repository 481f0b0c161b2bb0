"""Inference-time debiasing of stored class distributions (no training needed).

Every function takes rows of probabilities over one label set, shape (N, L), and
returns renormalized (N, L) probabilities. These are the training-free counterparts
of class-balanced sampling: they push mass away from the head classes ("neutral
sink") that a VLM's web-frequency prior favours.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from emodist.labels import canonical


def _rows(probs: object, name: str = "probs") -> np.ndarray:
    """(N, L) float64 rows, each renormalized; clear errors for bad input."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = p[None, :]
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"{name}: expected shape (N, L) with L >= 2 classes, got {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError(f"{name}: probabilities must be finite and >= 0")
    sums = p.sum(axis=1, keepdims=True)
    if np.any(sums <= 0):
        bad = int(np.flatnonzero(sums[:, 0] <= 0)[0])
        raise ValueError(f"{name}: row {bad} sums to 0; drop rows without a distribution first")
    return p / sums


def _vector(v: object, n_classes: int, name: str) -> np.ndarray:
    """A strictly positive (L,) distribution; (M, L) inputs are averaged over M."""
    a = np.asarray(v, dtype=np.float64)
    if a.ndim == 2:
        a = _rows(a, name).mean(axis=0)
    if a.ndim != 1 or a.shape[0] != n_classes:
        raise ValueError(f"{name}: expected shape ({n_classes},) or (M, {n_classes}), got {np.shape(v)}")
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        # a zero would give its class infinite weight: make the caller smooth it
        raise ValueError(f"{name}: every class needs a finite probability > 0, got {a.tolist()}")
    return a / a.sum()


def _normalize(p: np.ndarray) -> np.ndarray:
    return p / p.sum(axis=1, keepdims=True)


def none(probs: object) -> np.ndarray:
    """No debiasing; just validated and renormalized."""
    return _rows(probs)


def contextual_calibration(probs: object, content_free: object) -> np.ndarray:
    """Zhao et al. 2021: divide by the model's distribution for a content-free input
    (a blank or noise clip), then renormalize. content_free: (L,) or (M, L), averaged."""
    p = _rows(probs)
    return _normalize(p / _vector(content_free, p.shape[1], "content_free"))


def batch_calibration(probs: object) -> np.ndarray:
    """Batch calibration (Zhou et al. 2023): the batch mean of the output distributions
    estimates the contextual prior; divide each row by it and renormalize.

    We average probabilities (not log-probabilities), as in the paper's estimate of
    p(y|context); dividing in probability space equals subtracting log-mean in logit
    space. A class with zero mean has zero mass in every row and stays zero.
    """
    p = _rows(probs)
    mean = p.mean(axis=0)
    scaled = np.divide(p, mean, out=np.zeros_like(p), where=mean > 0)
    return _normalize(scaled)


def logit_adjustment(probs: object, prior: object, tau: float = 1.0) -> np.ndarray:
    """Menon et al. 2021: softmax(log p - tau * log prior). Prior (L,) > 0, normalized here."""
    p = _rows(probs)
    if not np.isfinite(tau):
        raise ValueError(f"tau must be finite, got {tau}")
    pr = _vector(prior, p.shape[1], "prior")
    with np.errstate(divide="ignore"):  # log 0 = -inf is fine: that class stays at 0
        z = np.log(p) - tau * np.log(pr)
    z -= z.max(axis=1, keepdims=True)
    return _normalize(np.exp(z))


def prior_from_labels(
    labels: Iterable[str | None], label_names: Sequence[str], smoothing: float = 1.0
) -> np.ndarray:
    """Class prior (L,) from label strings (matched with canonical()), Laplace-smoothed.
    Labels outside label_names (and empty ones) are ignored."""
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing}")
    names = [canonical(n) for n in label_names]
    index = {n: i for i, n in enumerate(names)}
    counts = np.zeros(len(names), dtype=np.float64)
    for lab in labels:
        i = index.get(canonical(lab)) if lab else None
        if i is not None:
            counts[i] += 1
    total = counts.sum() + smoothing * len(names)
    if total <= 0:
        raise ValueError(f"no label matches {names}; cannot count a prior (use smoothing > 0)")
    return (counts + smoothing) / total


def smooth_prior(weights: object) -> np.ndarray:
    """A prior (L,) for logit adjustment from class counts or shares that may hold zeros:
    each class without support gets the weight of the rarest class that has some, then
    the whole is normalized.

    Why a floor and not add-one alone: logit adjustment adds -tau*log(prior), so a class
    whose prior is near 0 (add-one on a large training set gives it 1/(N+L)) is lifted
    above every class the model actually sees and wins nearly every clip. Floored, an
    unseen class is lifted no more than the rarest seen one."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"prior: expected finite weights >= 0, one per class, got {np.asarray(weights).tolist()}")
    support = w > 0
    if not support.any():
        raise ValueError("prior: every class has weight 0; cannot make a prior")
    w = np.where(support, w, w[support].min())
    return w / w.sum()


def average_permutations(per_perm_probs: object, perms: object) -> np.ndarray:
    """Average answers given under k different option orders (removes position bias).

    per_perm_probs: (k, N, L) (or (k, L) for one clip): per_perm_probs[i][:, j] is the
    probability of the option shown in position j under permutation i.
    perms: (k, L); perms[i][j] = index into label_names of the option in position j.
    Returns (N, L) in label_names order.
    """
    p = np.asarray(per_perm_probs, dtype=np.float64)
    if p.ndim == 2:
        p = p[:, None, :]
    perm = np.asarray(perms)
    if p.ndim != 3 or perm.ndim != 2 or perm.shape != (p.shape[0], p.shape[2]):
        raise ValueError(
            f"per_perm_probs (k, N, L) and perms (k, L) disagree: {p.shape} vs {perm.shape}"
        )
    k, _, n_classes = p.shape
    out = np.zeros(p.shape[1:], dtype=np.float64)
    for i in range(k):
        if sorted(perm[i].tolist()) != list(range(n_classes)):
            raise ValueError(f"perms[{i}] = {perm[i].tolist()} is not a permutation of 0..{n_classes - 1}")
        mapped = np.empty_like(out)
        mapped[:, perm[i]] = _rows(p[i], f"per_perm_probs[{i}]")  # position j -> label perm[i][j]
        out += mapped
    return _normalize(out / k)


METHODS: dict[str, Callable[..., np.ndarray]] = {
    "none": none,
    "contextual": contextual_calibration,
    "batch": batch_calibration,
    "logit_adjust": logit_adjustment,
}
_REQUIRED = {"contextual": ("content_free",), "logit_adjust": ("prior",)}


def apply(method: str, probs: object, **kw: object) -> np.ndarray:
    """Debias with a method named in METHODS; its extra inputs go in **kw
    (contextual: content_free=; logit_adjust: prior=, tau=)."""
    fn = METHODS.get(method)
    if fn is None:
        raise ValueError(f"unknown debias method {method!r}; use one of {sorted(METHODS)}")
    missing = [k for k in _REQUIRED.get(method, ()) if kw.get(k) is None]
    if missing:
        raise ValueError(f"debias method {method!r} needs {', '.join(missing)}=...")
    try:
        return fn(probs, **kw)
    except TypeError as e:  # an argument this method does not take
        raise ValueError(f"debias method {method!r}: {e}") from None
