"""Synthetic `emodist run` outputs with the real prediction schema, for the audit's tests
and benchmarks/audit.py: a manifest whose labels are wrong for a known share of clips,
and prediction parts whose distributions mostly point at the true class.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from emodist import schema as col
from emodist.config import Config
from emodist.output.folder import PREDICTIONS, RunFolder


@dataclass
class Case:
    truth: np.ndarray  # the true class of each clip
    original: np.ndarray  # the manifest's label (wrong where `noisy`)
    noisy: np.ndarray  # bool: the manifest's label is wrong
    probs: np.ndarray  # (n, L) float32
    ids: list[str]


def make_case(n: int, labels: tuple[str, ...], *, seed: int = 0, noise: float = 0.1,
              strength: float = 3.0) -> Case:
    rng = np.random.default_rng(seed)
    L = len(labels)
    prior = 1.0 / np.arange(1, L + 1)  # a long tail
    truth = rng.choice(L, size=n, p=prior / prior.sum())
    noisy = rng.random(n) < noise
    original = truth.copy()
    original[noisy] = (truth[noisy] + rng.integers(1, L, noisy.sum())) % L
    logits = rng.normal(0, 1, (n, L)) + strength * np.eye(L)[truth]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    return Case(truth, original, noisy, probs, [f"clip_{i:07d}" for i in range(n)])


def _lists(values: pa.Array, per_row: int, n: int) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * per_row), values)


def write_predictions(folder: Path, case: Case, labels: tuple[str, ...], *, part_rows: int = 100_000,
                      config_hash: str = "synthetic0000000", clip_dir: str = "/data/clips",
                      rows: slice | None = None) -> list[Path]:
    """predictions/part-*.parquet under `folder`, in the schema `emodist run` writes."""
    out = folder / PREDICTIONS
    out.mkdir(parents=True, exist_ok=True)
    idx = np.arange(len(case.ids))[rows or slice(None)]
    L = len(labels)
    written = []
    start = len(RunFolder(str(folder), Config()).parts())  # parts already there: numbering goes on
    for k, lo in enumerate(range(0, len(idx), part_rows)):
        sel = idx[lo: lo + part_rows]
        n = len(sel)
        probs = case.probs[sel]
        pred = probs.argmax(axis=1)
        names = np.array(labels, dtype=object)
        gaps = 2
        arrays = {
            col.CLIP_ID: pa.array([case.ids[i] for i in sel], pa.string()),
            col.URI: pa.array([f"{clip_dir}/{case.ids[i]}.mp4" for i in sel], pa.string()),
            col.REF_LABEL: pa.array(names[case.original[sel]], pa.string()),
            col.LABEL: pa.array(names[pred], pa.string()),
            col.LABEL_NAMES: _lists(pa.array(np.tile(names, n), pa.string()), L, n),
            col.PROBS: _lists(pa.array(probs.ravel(), pa.float32()), L, n),
            col.PROBS_RAW: _lists(pa.array(probs.ravel(), pa.float32()), L, n),
            col.DEBIAS: pa.array(["none"] * n, pa.string()),
            col.ANSWER: pa.array(np.array(list("ABCDEFGHIJKL"), dtype=object)[pred], pa.string()),
            col.ANSWER_LABEL: pa.array(names[pred], pa.string()),
            col.KEYFRAME_TS: _lists(pa.array(np.tile([0.0, 1.0, 2.0], n)), 3, n),
            col.DESCRIPTIONS: _lists(pa.array(np.tile(np.array(
                ["lips move upwards into a brief smile", "brows draw together"], dtype=object), n), pa.string()), gaps, n),
            col.GAP_SPANS: _lists(pa.FixedSizeListArray.from_arrays(
                pa.array(np.tile([0.0, 1.0, 1.0, 2.0], n)), 2), gaps, n),
            col.DURATION_S: pa.array(np.full(n, 2.5)),
            col.NATIVE_FPS: pa.array(np.full(n, 25.0)),
            col.DECODE_DEVICE: pa.array(["cpu"] * n, pa.string()),
            col.FACE_RATIO: pa.array(np.full(n, 1.0)),
            col.MODE: pa.array(["msce"] * n, pa.string()),
            col.PROMPT_VERSION: pa.array(["v1"] * n, pa.string()),
            col.DESCRIBER_MODEL: pa.array(["synthetic"] * n, pa.string()),
            col.LABELER_MODEL: pa.array(["synthetic"] * n, pa.string()),
            col.CONFIG_HASH: pa.array([config_hash] * n, pa.string()),
            col.TIMINGS: pa.StructArray.from_arrays([pa.array(np.zeros(n)) for _ in col.TIMED_STAGES],
                                                    fields=list(col.TIMINGS_TYPE)),
        }
        # columns the audit does not read (and ones added to the schema later) stay null
        table = pa.Table.from_arrays([arrays[f.name].cast(f.type) if f.name in arrays else pa.nulls(n, f.type)
                                      for f in col.PREDICTIONS], schema=col.PREDICTIONS)
        path = out / f"part-{start + k:05d}.parquet"
        pq.write_table(table, path)
        written.append(path)
    return written


def write_manifest(path: Path, case: Case, labels: tuple[str, ...], clip_dir: str = "/data/clips") -> Path:
    """The manifest (clip_id, uri, label) with the noisy labels; format by suffix."""
    names = np.array(labels, dtype=object)
    t = pa.table({col.CLIP_ID: pa.array(case.ids, pa.string()),
                  col.URI: pa.array([f"{clip_dir}/{i}.mp4" for i in case.ids], pa.string()),
                  "label": pa.array(names[case.original], pa.string())})
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(t, path)
    else:
        import pyarrow.csv as pacsv

        pacsv.write_csv(t, path)
    return path
