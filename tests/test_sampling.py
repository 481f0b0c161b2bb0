"""Class-aware manifest resampling: proportions, determinism, formats, scale."""
from __future__ import annotations

import json
import math
import time
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from emodist.sampling import class_probabilities, sample_manifest

COUNTS = {"happy": 500, "neutral": 300, "sad": 150, "disgust": 30, "fear": 20}


def make_manifest(path, counts=COUNTS, seed=0, extra_unlabeled=0):
    labels = [c for c, n in counts.items() for _ in range(n)] + [""] * extra_unlabeled
    np.random.default_rng(seed).shuffle(labels)
    ids = [f"{i:05d}" for i in range(len(labels))]
    table = pa.table({"clip_id": ids, "uri": [f"v/{i}.mp4" for i in ids], "label": labels})
    if str(path).endswith(".csv"):
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return str(path)


def read_out(path) -> pa.Table:
    path = str(path)
    if path.endswith(".jsonl"):
        with open(path) as f:
            return pa.Table.from_pylist([json.loads(line) for line in f])
    if path.endswith(".csv"):
        return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={"clip_id": pa.string()}))
    return pq.read_table(path)


def label_counts(table: pa.Table) -> dict[str, int]:
    return dict(Counter(table.column("label").to_pylist()))


def test_balanced_equal_counts(tmp_path):
    src = make_manifest(tmp_path / "m.parquet")
    stats = sample_manifest(src, str(tmp_path / "out.parquet"), "balanced", size=500, seed=1)
    out = read_out(tmp_path / "out.parquet")
    assert label_counts(out) == {c: 100 for c in COUNTS} == stats.after
    assert stats.before == dict(sorted(COUNTS.items()))
    assert sorted(stats.with_replacement) == ["disgust", "fear"]
    assert any("disgust" in n and "with replacement" in n for n in stats.notes)
    ids_by_class = {c: [i for i, lab in zip(out["clip_id"].to_pylist(), out["label"].to_pylist()) if lab == c]
                    for c in COUNTS}
    for c in ("happy", "neutral", "sad"):  # enough rows: no repeats
        assert len(set(ids_by_class[c])) == 100
    assert len(set(ids_by_class["fear"])) == 20  # every fear row used, 5 times each
    assert set(Counter(ids_by_class["fear"]).values()) == {5}
    assert out.schema.names == ["clip_id", "uri", "label"]


def test_instance_keeps_proportions(tmp_path):
    src = make_manifest(tmp_path / "m.parquet")
    sample_manifest(src, str(tmp_path / "out.parquet"), "instance", size=400, seed=2)
    out = read_out(tmp_path / "out.parquet")
    got, total = label_counts(out), sum(COUNTS.values())
    assert out.num_rows == 400 and len(set(out["clip_id"].to_pylist())) == 400
    for c, n in COUNTS.items():
        p = n / total
        assert abs(got[c] / 400 - p) <= 3 * math.sqrt(p * (1 - p) / 400)


def test_sqrt_between_instance_and_balanced(tmp_path):
    src = make_manifest(tmp_path / "m.parquet")
    shares = {}
    for strategy in ("instance", "sqrt", "balanced"):
        stats = sample_manifest(src, str(tmp_path / f"{strategy}.parquet"), strategy, size=1000, seed=3)
        shares[strategy] = {c: k / 1000 for c, k in stats.after.items()}
    for c in ("happy", "neutral"):  # head classes shrink
        assert shares["instance"][c] > shares["sqrt"][c] > shares["balanced"][c]
    for c in ("disgust", "fear"):  # tail classes grow
        assert shares["instance"][c] < shares["sqrt"][c] < shares["balanced"][c]
    root = {c: math.sqrt(n) for c, n in COUNTS.items()}
    assert shares["sqrt"]["fear"] == pytest.approx(root["fear"] / sum(root.values()), abs=1e-3)


def test_progressive_interpolates():
    p0, _ = class_probabilities(COUNTS, "progressive", progress=0.0)
    p1, _ = class_probabilities(COUNTS, "progressive", progress=1.0)
    half, q = class_probabilities(COUNTS, "progressive", progress=0.5)
    assert p0 == pytest.approx(class_probabilities(COUNTS, "instance")[0])
    assert p1 == pytest.approx(class_probabilities(COUNTS, "balanced")[0])
    assert q is None and half["fear"] == pytest.approx((p0["fear"] + p1["fear"]) / 2)
    assert class_probabilities(COUNTS, "power", q=0.5)[0] == pytest.approx(class_probabilities(COUNTS, "sqrt")[0])


def test_deterministic_for_seed(tmp_path):
    src = make_manifest(tmp_path / "m.parquet")
    outs = []
    for i, seed in enumerate((5, 5, 6)):
        sample_manifest(src, str(tmp_path / f"o{i}.parquet"), "sqrt", size=300, seed=seed)
        outs.append(read_out(tmp_path / f"o{i}.parquet")["clip_id"].to_pylist())
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]


def test_formats_keep_values_and_skip_unlabeled(tmp_path):
    src = make_manifest(tmp_path / "m.csv", extra_unlabeled=7)
    stats = sample_manifest(src, str(tmp_path / "o.jsonl"), "balanced", size=50, seed=0)
    out = read_out(tmp_path / "o.jsonl")
    assert out.num_rows == 50 and stats.unlabeled_skipped == 7 and stats.rows_in == 1007
    assert all(len(i) == 5 for i in out["clip_id"].to_pylist())  # '00042' keeps its zeros
    sample_manifest(str(tmp_path / "o.jsonl"), str(tmp_path / "o2.csv"), "instance", seed=0)
    assert sorted(read_out(tmp_path / "o2.csv")["clip_id"].to_pylist()) == sorted(out["clip_id"].to_pylist())


@pytest.mark.parametrize("kw, match", [
    (dict(strategy="bogus"), "unknown strategy"),
    (dict(strategy="sqrt", q=0.3), "only for strategy 'power'"),
    (dict(strategy="power"), "needs q"),
    (dict(strategy="progressive"), "progress="),
    (dict(strategy="balanced", progress=0.5), "progress="),
    (dict(strategy="progressive", progress=1.5), r"\[0, 1\]"),
    (dict(strategy="balanced", size=-1), "size"),
])
def test_bad_arguments(tmp_path, kw, match):
    src = make_manifest(tmp_path / "m.parquet")
    with pytest.raises(ValueError, match=match):
        sample_manifest(src, str(tmp_path / "o.parquet"), **kw)


def test_bad_inputs(tmp_path):
    src = make_manifest(tmp_path / "m.parquet")
    with pytest.raises(ValueError, match="overwrite the input"):
        sample_manifest(src, src, "balanced")
    with pytest.raises(ValueError, match="suffix"):
        sample_manifest(src, str(tmp_path / "o.txt"), "balanced")
    pq.write_table(pa.table({"uri": ["a.mp4"]}), tmp_path / "nolabel.parquet")
    with pytest.raises(ValueError, match="no label column"):
        sample_manifest(str(tmp_path / "nolabel.parquet"), str(tmp_path / "o.parquet"), "balanced")


def test_million_rows_streams_fast(tmp_path):
    n = 1_000_000
    rng = np.random.default_rng(0)
    share = np.array([0.30, 0.25, 0.2, 0.12, 0.08, 0.04, 0.01])
    names = np.array(["happy", "neutral", "sad", "angry", "surprise", "fear", "disgust"])
    labels = names[rng.choice(7, size=n, p=share)]
    ids = pc.cast(pa.array(np.arange(n)), pa.string())
    pq.write_table(pa.table({"clip_id": ids, "uri": pc.binary_join_element_wise("s3://b/", ids, ".mp4", ""),
                             "label": labels}), tmp_path / "big.parquet", row_group_size=200_000)
    start = time.perf_counter()
    stats = sample_manifest(str(tmp_path / "big.parquet"), str(tmp_path / "o.parquet"), "sqrt", seed=0)
    elapsed = time.perf_counter() - start
    assert elapsed < 10, f"1M rows took {elapsed:.1f}s"
    assert stats.rows_out == n
    out = pq.read_table(tmp_path / "o.parquet", columns=["clip_id", "label"])
    assert out.num_rows == n
    # rows kept once (no replacement) are spread over the whole file, not the first batches
    happy = pc.cast(pc.filter(out["clip_id"], pc.equal(out["label"], "happy")), pa.int64()).to_numpy()
    assert len(np.unique(happy)) == len(happy)
    assert abs(happy.mean() / n - 0.5) < 0.01


# --- per-epoch sampling for fine-tuning ------------------------------------------------

def _long_tail() -> np.ndarray:
    return np.repeat(np.arange(4), [500, 120, 30, 6])


@pytest.mark.parametrize("strategy,q", [("instance", 1.0), ("sqrt", 0.5), ("balanced", 0.0)])
def test_epoch_shares_follow_n_to_the_q(strategy, q):
    from emodist.sampling import class_shares, epoch_copies

    classes = _long_tail()
    n = np.bincount(classes).astype(float)
    copies = epoch_copies(classes, 4, strategy, epoch=0, epochs=3, seed=1)
    assert copies.sum() == len(classes)
    np.testing.assert_allclose(class_shares(classes, copies, 4), n**q / (n**q).sum(), atol=1 / len(classes))
    # every example of a class is drawn floor(m/n) or that plus one times: spread evenly
    for j in range(4):
        assert copies[classes == j].max() - copies[classes == j].min() <= 1


def test_decoupled_is_instance_then_balanced_and_progressive_moves_between():
    from emodist.sampling import class_shares, epoch_copies

    classes = _long_tail()
    shares = [class_shares(classes, epoch_copies(classes, 4, "decoupled", epoch=e, epochs=4), 4) for e in range(4)]
    np.testing.assert_allclose(shares[0], np.bincount(classes) / len(classes), atol=0.01)
    np.testing.assert_allclose(shares[1], shares[0])
    np.testing.assert_allclose(shares[2], [0.25] * 4, atol=0.01)
    np.testing.assert_allclose(shares[3], [0.25] * 4, atol=0.01)
    prog = [class_shares(classes, epoch_copies(classes, 4, "progressive", epoch=e, epochs=3), 4)[3] for e in range(3)]
    assert prog[0] < prog[1] < prog[2]  # the rarest class gains share epoch by epoch
    np.testing.assert_allclose(prog[2], 0.25, atol=0.01)


def test_epoch_draws_agree_across_processes_and_differ_across_epochs():
    from emodist.sampling import epoch_copies

    classes = _long_tail()
    a = epoch_copies(classes, 4, "balanced", epoch=2, epochs=4, seed=3)
    assert np.array_equal(a, epoch_copies(classes, 4, "balanced", epoch=2, epochs=4, seed=3))
    assert not np.array_equal(a, epoch_copies(classes, 4, "balanced", epoch=3, epochs=4, seed=3))


def test_balanced_sampling_of_a_class_without_examples_names_it():
    from emodist.sampling import epoch_copies

    classes = np.array([0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="balanced sampling draws every class, but fear has no training examples; "
                                         "add labeled clips of it, leave it out of `labels`"):
        epoch_copies(classes, 3, "balanced", epoch=0, epochs=1, names=("happy", "sad", "fear"))
    # instance and sqrt draw by n_j: an empty class is drawn 0 times, no error
    assert epoch_copies(classes, 3, "sqrt", epoch=0, epochs=1).sum() == 5
