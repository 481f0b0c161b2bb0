"""Predictions and manifests for the tests of `emodist eval` (test_evaluate.py,
test_eval_metrics.py, test_eval_debias.py, test_report.py)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from emodist import schema as col
from emodist.labels import DFEW, canonical


FACE_API_ORDER = ["neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised"]


def write_manifest(path, ids, labels):
    pacsv.write_csv(pa.table({"clip_id": ids, "uri": [f"{i}.mp4" for i in ids], "label": labels}), path)
    return str(path)


def write_run(folder, ids, labels, names=None, probs=None, failed=()):
    """An `emodist run` output folder: predictions/*.parquet (+ failures/)."""
    rows = [{col.CLIP_ID: i, col.LABEL: lab, col.LABEL_NAMES: names, col.PROBS_RAW: None if probs is None
             else [float(x) for x in probs[k]]} for k, (i, lab) in enumerate(zip(ids, labels))]
    (folder / "predictions").mkdir(parents=True)
    half = len(rows) // 2  # two part files, as a distributed writer leaves them
    pq.write_table(pa.Table.from_pylist(rows[:half], schema=col.PREDICTIONS), folder / "predictions/part-0.parquet")
    pq.write_table(pa.Table.from_pylist(rows[half:], schema=col.PREDICTIONS), folder / "predictions/part-1.parquet")
    (folder / "failures").mkdir()
    pq.write_table(pa.Table.from_pylist([{col.CLIP_ID: f} for f in failed], schema=col.FAILURES),
                   folder / "failures/part-0.parquet")
    return str(folder)


def random_case(seed, n=400):
    rng = np.random.default_rng(seed)
    share = np.array([0.3, 0.15, 0.25, 0.15, 0.08, 0.02, 0.05])
    truth = rng.choice(DFEW, size=n, p=share)
    right = rng.random(n) < 0.5
    pred = np.where(right, truth, rng.choice(DFEW, size=n, p=[0.2, 0.1, 0.5, 0.1, 0.05, 0.0, 0.05]))
    # not digits only: the old read_manifest parsed a numeric CSV clip_id as a number
    return [f"c{i:05d}" for i in range(n)], truth.tolist(), pred.tolist()


def biased_run(tmp_path, n=350, seed=0):
    """A model that leans to neutral: raw probs in face-api's order and names."""
    ids, truth, _ = random_case(seed, n)
    rng = np.random.default_rng(seed)
    order = [canonical(x) for x in FACE_API_ORDER]
    signal = np.array([[3.0 if name == t else 1.0 for name in order] for t in truth])
    probs = rng.dirichlet(np.ones(7), size=n) * signal * np.array([6.0, 1, 1, 1, 1, 1, 1])
    probs /= probs.sum(axis=1, keepdims=True)
    stored = [order[k] for k in probs.argmax(axis=1)]
    preds = write_run(tmp_path / "out", ids, stored, names=FACE_API_ORDER, probs=probs.astype(np.float32))
    return preds, write_manifest(tmp_path / "m.csv", ids, truth), truth, probs, order
