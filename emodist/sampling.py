"""Class-aware resampling of manifests against the head classes (Kang et al. 2020).

Class j is drawn with probability p_j proportional to n_j^q: q=1 instance-balanced
(the data as it is), q=1/2 square-root, q=0 class-balanced. Progressive sampling
moves from instance to class-balanced as training progresses.

Two streaming passes with pyarrow, so millions of rows fit in one batch of memory:
pass 1 counts the labels (label column only); pass 2 picks rows. Because pass 1 gives
each class's exact size n_j, pass 2 picks exactly the planned number of rows of each
class uniformly without replacement by drawing, batch by batch, how many of the
batch's class-j rows to keep from a hypergeometric law - sequential sampling that
needs neither the row indices nor a reservoir of candidates. Rows come out in input order.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from emodist import storage
from emodist.io.manifests import tabular_batches, tabular_suffix
from emodist.labels import canonical

STRATEGIES: dict[str, float | None] = {
    "instance": 1.0, "sqrt": 0.5, "balanced": 0.0,
    "progressive": None,  # needs progress= in [0, 1]
    "power": None,  # needs q=
}
LABEL_COLUMNS = ("label", "ref_label")


@dataclass
class SampleStats:
    input_uri: str
    output_uri: str
    strategy: str
    q: float | None  # None for progressive (a mix of q=1 and q=0)
    progress: float | None
    seed: int
    rows_in: int
    rows_out: int
    unlabeled_skipped: int
    before: dict[str, int]
    after: dict[str, int]
    probabilities: dict[str, float]
    with_replacement: list[str]  # classes asked for more rows than they have
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _as_text(arr: pa.Array) -> pa.Array:
    return arr if pa.types.is_string(arr.type) else pc.cast(arr, pa.string())


def _label_column(uri: str, label_column: str | None, cfg) -> str:
    batches = tabular_batches(uri, cfg)
    try:
        names = next(batches).schema.names
    except StopIteration:
        raise ValueError(f"{uri}: manifest has no rows") from None
    finally:
        batches.close()
    if label_column is None:
        label_column = next((c for c in LABEL_COLUMNS if c in names), None)
    if label_column not in names:
        raise ValueError(f"{uri}: no label column (columns: {names}); add 'label' or pass label_column=")
    return label_column


def class_probabilities(counts: dict[str, int], strategy: str, q: float | None = None,
                        progress: float | None = None) -> tuple[dict[str, float], float | None]:
    """p_j for each class, and the q used (None for progressive)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; use one of {sorted(STRATEGIES)}")
    if strategy == "power":
        if q is None or not 0 <= q <= 1:
            raise ValueError(f"strategy 'power' needs q in [0, 1], got {q}")
    elif q is not None:
        raise ValueError(f"q= is only for strategy 'power' ({strategy!r} has its own q)")
    if (strategy == "progressive") != (progress is not None):
        raise ValueError("progress= in [0, 1] goes with strategy 'progressive' only")
    n = np.array([counts[c] for c in counts], dtype=np.float64)

    def power(qq: float) -> np.ndarray:
        w = n ** qq
        return w / w.sum()

    if strategy == "progressive":
        if not 0 <= progress <= 1:  # type: ignore[operator]
            raise ValueError(f"progress must be in [0, 1], got {progress}")
        # Kang et al. 2020: p(t) = (1 - t) p_instance + t p_balanced
        p, q = (1 - progress) * power(1.0) + progress * power(0.0), None  # type: ignore[operator]
    else:
        q = STRATEGIES[strategy] if q is None else q
        p = power(q)  # type: ignore[arg-type]
    return dict(zip(counts, p.tolist())), q


def _allocate(size: int, probs: dict[str, float]) -> dict[str, int]:
    """Integer counts summing to size, closest to size * p_j (largest remainder)."""
    exact = {c: size * p for c, p in probs.items()}
    out = {c: int(np.floor(v)) for c, v in exact.items()}
    by_remainder = sorted(probs, key=lambda c: (-(exact[c] - out[c]), c))
    for c in by_remainder[: size - sum(out.values())]:
        out[c] += 1
    return out


class _Writer:
    """Streams batches to csv/parquet/jsonl; the schema comes from the first batch."""

    def __init__(self, uri: str, cfg) -> None:
        self.suffix = tabular_suffix(uri)
        fs, path = storage.filesystem(uri, cfg)
        fs.makedirs(_parent(path), exist_ok=True)
        self.file = fs.open(path, "wb")
        self.inner: pq.ParquetWriter | pacsv.CSVWriter | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        if self.suffix == ".jsonl":
            self.file.write("".join(json.dumps(r, default=str) + "\n" for r in batch.to_pylist()).encode())
            return
        if self.inner is None:
            self.inner = (pq.ParquetWriter(self.file, batch.schema) if self.suffix == ".parquet"
                          else pacsv.CSVWriter(self.file, batch.schema))
        self.inner.write_batch(batch)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
        self.file.close()


def _parent(path: str) -> str:
    return str(PurePosixPath(path).parent)


def sample_manifest(input_uri: str, output_uri: str, strategy: str, *, size: int | None = None,
                    seed: int = 0, q: float | None = None, progress: float | None = None,
                    label_column: str | None = None, cfg=None) -> SampleStats:
    """Write a resampled manifest; rows without a label are skipped (and counted).
    `cfg`: storage settings for s3:// manifests (default: the standard variables)."""
    from emodist.config import Config

    cfg = cfg or Config()
    start = time.perf_counter()
    if storage.filesystem(input_uri, cfg)[1] == storage.filesystem(output_uri, cfg)[1]:
        raise ValueError(f"{output_uri}: output would overwrite the input; write elsewhere")
    tabular_suffix(output_uri)
    label_col = _label_column(input_uri, label_column, cfg)

    # pass 1: label counts, reading the label column only
    raw_counts: Counter[str | None] = Counter()
    for b in tabular_batches(input_uri, cfg, [label_col]):
        vc = pc.value_counts(_as_text(b.column(0)))
        raw_counts.update(dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())))
    raw_values = [v for v in raw_counts if v is not None]
    cls_of = {v: canonical(v) for v in raw_values if canonical(v)}
    per_class: Counter[str] = Counter()
    for v, c in cls_of.items():
        per_class[c] += raw_counts[v]
    before = dict(sorted(per_class.items()))
    rows_in = sum(raw_counts.values())
    labeled = sum(before.values())
    if not before:
        raise ValueError(f"{input_uri}: column {label_col!r} has no labels to sample by")
    size = labeled if size is None else size
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    probs, q_used = class_probabilities(before, strategy, q, progress)
    target = _allocate(size, probs)

    classes = list(before)
    cls_idx = {c: j for j, c in enumerate(classes)}
    # raw value -> class index; the extra last slot (-1) takes nulls and empty labels
    lookup = np.array([cls_idx[cls_of[v]] if v in cls_of else -1 for v in raw_values] + [-1])
    value_set = pa.array(raw_values, type=pa.string())
    n = np.array([before[c] for c in classes])
    m = np.array([target[c] for c in classes])
    full, need, left = m // n, m % n, n.copy()  # every row `full` times + `need` rows once more
    after = np.zeros(len(classes), dtype=np.int64)
    rng = np.random.default_rng(seed)

    # pass 2: per batch, draw how many of its class-j rows to keep, then which ones
    writer = _Writer(output_uri, cfg)
    try:
        for b in tabular_batches(input_uri, cfg):
            idx = pc.index_in(_as_text(b.column(label_col)), value_set=value_set).fill_null(len(raw_values))
            cls = lookup[idx.to_numpy(zero_copy_only=False)]
            copies = np.zeros(len(cls), dtype=np.int64)
            for j in np.unique(cls[cls >= 0]):
                rows = np.flatnonzero(cls == j)
                copies[rows] = full[j]
                h = int(rng.hypergeometric(need[j], left[j] - need[j], len(rows))) if need[j] else 0
                if h:
                    copies[rows[rng.choice(len(rows), h, replace=False)]] += 1
                need[j] -= h
                left[j] -= len(rows)
                after[j] += copies[rows].sum()
            if copies.any():
                writer.write(b.take(pa.array(np.repeat(np.arange(len(cls)), copies))))
    finally:
        writer.close()

    oversampled = [c for c in classes if target[c] > before[c]]
    notes = [f"{c}: {target[c]} rows asked of {before[c]}: every row {target[c] // before[c]}x, "
             f"{target[c] % before[c]} drawn once more (with replacement; clip ids repeat)"
             for c in oversampled]
    if rows_in > labeled:
        notes.append(f"{rows_in - labeled} rows without a label were skipped")
    return SampleStats(
        input_uri, output_uri, strategy, q_used, progress, seed, rows_in, int(after.sum()),
        rows_in - labeled, before, {c: int(a) for c, a in zip(classes, after)}, probs, oversampled,
        notes, time.perf_counter() - start)


# --- per-epoch sampling for fine-tuning ------------------------------------------------

def epoch_strategy(strategy: str, epoch: int, epochs: int,
                   instance_epochs: int | None = None) -> tuple[str, float | None]:
    """(strategy, progress) that `class_probabilities` takes for one epoch of a schedule.
    decoupled (Kang et al. 2020): instance sampling for the first `instance_epochs`
    (default: half, rounded up), class-balanced after; progressive: instance at the first
    epoch to balanced at the last."""
    if strategy == "decoupled":
        first = (epochs + 1) // 2 if instance_epochs is None else instance_epochs
        return ("instance" if epoch < first else "balanced"), None
    if strategy == "progressive":
        return "progressive", (epoch / (epochs - 1) if epochs > 1 else 1.0)
    return strategy, None


def epoch_copies(classes: np.ndarray, n_classes: int, strategy: str, *, epoch: int, epochs: int,
                 seed: int = 0, size: int | None = None, instance_epochs: int | None = None,
                 names: tuple[str, ...] | None = None) -> np.ndarray:
    """How many times each example is drawn in one epoch: `classes[i]` is example i's
    class index. Class j gets exactly round(size * p_j) draws (p_j from the epoch's
    strategy over the classes present), spread evenly over its examples: every example
    m_j // n_j times, m_j % n_j of them once more, chosen at random. The same
    (seed, epoch) gives the same draws in every process (all training workers agree)."""
    counts = np.bincount(classes, minlength=n_classes)
    present = np.flatnonzero(counts)
    name = (lambda j: names[j]) if names else str
    kind, progress = epoch_strategy(strategy, epoch, epochs, instance_epochs)
    if kind in ("balanced", "progressive") and len(present) < n_classes:  # n_j^0 = 1: every class is drawn
        empty = [name(j) for j in np.flatnonzero(counts == 0)]
        raise ValueError(
            f"{kind} sampling draws every class, but {', '.join(empty)} ha{'s' if len(empty) == 1 else 've'} "
            "no training examples; add labeled clips of it, leave it out of `labels`, or use "
            "finetune.strategy=instance")
    probs, _ = class_probabilities({int(j): int(counts[j]) for j in present}, kind, None, progress)
    target = _allocate(len(classes) if size is None else size, probs)
    rng = np.random.default_rng([seed, epoch])
    copies = np.zeros(len(classes), dtype=np.int64)
    for j in present:
        rows = np.flatnonzero(classes == j)
        m, n = target[int(j)], len(rows)
        copies[rows] = m // n
        copies[rows[rng.choice(n, m % n, replace=False)]] += 1
    return copies


def class_shares(classes: np.ndarray, copies: np.ndarray, n_classes: int) -> np.ndarray:
    """Each class's share of an epoch's draws."""
    drawn = np.bincount(classes, weights=copies, minlength=n_classes)
    return drawn / max(drawn.sum(), 1)
