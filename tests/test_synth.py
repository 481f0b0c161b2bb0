"""Synthetic clips: files, manifest, determinism, class mix, and visible expression events."""
from __future__ import annotations

import csv
from collections import Counter

import av
import numpy as np
import pytest

from emodist.labels import DFEW, MAFW
from emodist.synth import class_weights, draw_labels, intensity, plan_clips, synthesize

FPS, SIZE = 25, 224
KW = dict(seed=0, min_s=2.0, max_s=4.0)  # short clips keep the suite fast


def decode(path) -> tuple[av.video.stream.VideoStream, np.ndarray]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
        return stream, frames


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return synthesize(out, 8, **KW)


def test_manifest_and_files(dataset):
    lines = dataset.read_text().splitlines()
    assert lines[0] == "uri,label"
    rows = list(csv.DictReader(lines))
    assert [r["uri"] for r in rows] == [f"clip_{i:05d}.mp4" for i in range(8)]
    assert all(r["label"] in DFEW for r in rows)
    plans = plan_clips(8, **KW)
    assert [p.label for p in plans] == [r["label"] for r in rows]
    for plan in plans:
        assert KW["min_s"] - 0.5 / FPS <= plan.duration_s <= KW["max_s"] + 0.5 / FPS
        stream, frames = decode(dataset.parent / plan.uri)
        assert stream.average_rate == FPS
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert frames.shape == (plan.n_frames, SIZE, SIZE, 3)
        assert float(stream.duration * stream.time_base) == pytest.approx(plan.duration_s, abs=1.5 / FPS)


def test_events_csv(dataset):
    plans = {p.uri: p for p in plan_clips(8, **KW)}
    with open(dataset.parent / "events.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["uri", "label", "event_start_s", "event_end_s"]
    by_clip = Counter(r["uri"] for r in rows)
    for uri, plan in plans.items():
        assert by_clip[uri] == len(plan.events)
        assert (plan.label == "neutral") == (not plan.events)
    for r in rows:
        plan = plans[r["uri"]]
        a, b = float(r["event_start_s"]), float(r["event_end_s"])
        assert r["label"] == plan.label
        assert 0.25 - 1e-3 <= b - a <= 0.5 + 1e-3
        assert 0 <= a < b <= plan.duration_s


def test_event_planning_many_clips():
    plans = plan_clips(300, seed=3, min_s=2.0, max_s=6.0)
    for p in plans:
        assert len(p.events) <= 3
        for (a, b), nxt in zip(p.events, p.events[1:] + ((p.duration_s + 1, 0),)):
            assert 0.25 - 1e-3 <= b - a <= 0.5 + 1e-3 and 0 <= a and b <= p.duration_s
            assert b < nxt[0]  # no overlap
    assert Counter(len(p.events) for p in plans if p.label != "neutral").keys() == {1, 2, 3}


def _face_blocks(frames: np.ndarray, k: int = 8) -> np.ndarray:
    """Inner face (brows to chin, without the head's sides) as k x k block means: a head
    drifting by a pixel barely moves block means; a smile or raised brows do."""
    face = frames[:, int(SIZE * 0.28):int(SIZE * 0.78), int(SIZE * 0.33):int(SIZE * 0.67)]
    n, h, w, _ = face.shape
    face = face[:, : h // k * k, : w // k * k].astype(np.float32)
    return face.reshape(n, h // k, k, w // k, k, 3).mean(axis=(2, 4))


def test_events_are_visible(dataset):
    ratios = []
    for plan in plan_clips(8, **KW):
        if not plan.events:
            continue
        face = _face_blocks(decode(dataset.parent / plan.uri)[1])
        t = np.arange(plan.n_frames) / FPS
        neutral = np.flatnonzero(intensity(t, plan.events) == 0)
        for a, b in plan.events:
            peak = int(round((a + b) / 2 * FPS))
            n1, n2 = neutral[np.argsort(np.abs(neutral - peak))[:2]]  # two nearest neutral frames
            d_event = np.abs(face[peak] - face[n1]).mean()
            d_neutral = np.abs(face[n1] - face[n2]).mean()
            assert d_event > 1.3 * d_neutral, (plan.label, d_event, d_neutral)
            ratios.append(d_event / d_neutral)
    assert ratios and np.median(ratios) > 2


def test_deterministic_for_a_seed(tmp_path):
    kw = dict(min_s=1.0, max_s=1.5)
    a = synthesize(tmp_path / "a", 2, seed=7, **kw)
    b = synthesize(tmp_path / "b", 2, seed=7, **kw)
    c = synthesize(tmp_path / "c", 2, seed=8, **kw)
    assert a.read_bytes() == b.read_bytes()
    assert (a.parent / "events.csv").read_bytes() == (b.parent / "events.csv").read_bytes()
    for name in ("clip_00000.mp4", "clip_00001.mp4"):
        fa, fb, fc = (decode(m.parent / name)[1] for m in (a, b, c))
        assert np.array_equal(fa[0], fb[0]) and np.array_equal(fa, fb)
        assert not np.array_equal(fa[0], fc[0])
    rng = lambda s: np.random.default_rng(s)  # noqa: E731
    assert draw_labels(50, DFEW, rng(7)) == draw_labels(50, DFEW, rng(7))
    assert draw_labels(50, DFEW, rng(7)) != draw_labels(50, DFEW, rng(8))


def test_long_tail_class_mix():
    counts = Counter(draw_labels(400, DFEW, np.random.default_rng(0)))
    assert counts["disgust"] / 400 < 0.04
    assert counts["happy"] / 400 > 0.15 and counts["neutral"] / 400 > 0.15
    assert counts["happy"] > counts["fear"] > counts["disgust"]
    w = dict(zip(MAFW, class_weights(MAFW)))
    assert sum(w.values()) == pytest.approx(1.0)
    assert w["contempt"] == w["helplessness"] < w["fear"] < w["happy"]
    assert set(draw_labels(2000, MAFW, np.random.default_rng(1))) == set(MAFW)


@pytest.mark.parametrize("kwargs", [
    dict(n_clips=0), dict(size=63), dict(size=65), dict(size=32),
    dict(min_s=0.0), dict(min_s=3.0, max_s=2.0), dict(fps=0), dict(fps=2.5), dict(labels=()),
])
def test_invalid_arguments(tmp_path, kwargs):
    args = dict(n_clips=1) | kwargs
    with pytest.raises(ValueError):
        synthesize(tmp_path, args.pop("n_clips"), **args)
    assert not list(tmp_path.iterdir())


def test_custom_labels_and_short_clips(tmp_path):
    manifest = synthesize(tmp_path, 2, seed=1, labels=("calm", "joy", "boredom"), size=64,
                          min_s=0.2, max_s=0.3)
    rows = list(csv.DictReader(manifest.read_text().splitlines()))
    assert {r["label"] for r in rows} <= {"calm", "joy", "boredom"}
    for p in plan_clips(2, seed=1, labels=("calm", "joy", "boredom"), min_s=0.2, max_s=0.3):
        _, frames = decode(tmp_path / p.uri)
        assert frames.shape[1:] == (64, 64, 3)
        assert all(0 <= a < b <= p.duration_s for a, b in p.events)
