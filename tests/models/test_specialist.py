"""The specialist describer and labeler: wording rules, pooling, and the protocols on
the real Pexels video."""
from __future__ import annotations


import numpy as np
import pytest

from emodist.labels import DFEW, MAFW
from emodist.models.base import ClipInput, Describer, Gap, Labeler
from emodist.models.expression import CLASSES
from emodist.models.specialist import aggregate, describe_trajectory

N, H, SAD, SUR = (CLASSES.index(c) for c in ("neutral", "happy", "sad", "surprise"))


def traj(rows: list[dict[int, float]]) -> np.ndarray:
    """Probabilities from {class: p} rows; the rest of the mass goes to neutral."""
    out = np.zeros((len(rows), len(CLASSES)))
    for i, r in enumerate(rows):
        for c, p in r.items():
            out[i, c] = p
        out[i, N] += 1 - out[i].sum()
    return out


TS = np.array([2.0, 2.25, 2.5, 2.75, 3.0])


def test_wording_rise_and_return():
    p = traj([{SUR: 0.05}, {SUR: 0.8}, {SUR: 0.5}, {SUR: 0.1}, {SUR: 0.05}])
    assert describe_trajectory(TS, p) == "surprise rises to 0.80 at 2.25 s, back to neutral by 2.50 s"


def test_wording_steady_fall_and_handover():
    assert describe_trajectory(TS, traj([{}] * 5)) == "steady neutral (1.0)"
    assert describe_trajectory(TS, traj([{H: 0.9}] * 5)) == "steady happy (0.9)"
    fall = traj([{H: 0.8}, {H: 0.7}, {H: 0.4}, {H: 0.2}, {H: 0.1}])
    assert describe_trajectory(TS, fall) == "happy falls from 0.80 at 2.00 s to 0.10 by 3.00 s, leaving neutral"
    handover = traj([{H: 0.1}, {H: 0.9}, {H: 0.6, SAD: 0.3}, {H: 0.2, SAD: 0.7}, {SAD: 0.9}])
    assert describe_trajectory(TS, handover) == "sad rises to 0.90 at 3.00 s, replacing happy"
    eases = traj([{H: 0.2}, {H: 0.95}, {H: 0.75}, {H: 0.7}, {H: 0.7}])
    assert describe_trajectory(TS, eases) == "happy rises to 0.95 at 2.25 s, eases to 0.75 by 2.50 s"
    assert describe_trajectory(TS[:0], traj([])) == "no frames"


def test_peak_pooling_lifts_a_brief_expression():
    p = traj([{}] * 8 + [{SUR: 0.9}] * 2)
    assert aggregate(p, "mean").argmax() == N
    assert aggregate(p, "peak").argmax() == SUR
    assert aggregate(p, "peak").sum() == pytest.approx(1)
    assert aggregate(traj([{}] * 3), "peak").argmax() == N  # all neutral stays neutral
    with pytest.raises(ValueError, match="mean.*peak"):
        aggregate(p, "max")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pexels(fetched) -> tuple[np.ndarray, np.ndarray]:
    """Frames at 4 fps over 0-3 s and 12.5-15.5 s, with their times."""
    import av

    frames, ts = [], []
    with av.open(str(fetched["pexels_video"])) as c:
        c.streams.video[0].thread_type = "AUTO"
        nxt = 0.0
        for f in c.decode(video=0):
            if f.time >= 15.5:
                break
            if f.time >= nxt - 1e-3 and (f.time < 3.0 or f.time >= 12.5):
                frames.append(f.to_ndarray(format="rgb24"))
                ts.append(f.time)
                nxt += 0.25
    return np.stack(frames), np.array(ts)


@pytest.fixture(scope="module")
def labeler(fetched):
    from emodist.models.specialist import AggregateLabeler

    return AggregateLabeler()


def test_labeler_protocol_and_distributions(pexels, labeler):
    from emodist.models.specialist import AggregateLabeler

    frames, ts = pexels
    assert isinstance(labeler, Labeler) and labeler.wants_all_frames
    early, late = ts < 3.0, (ts >= 12.5) & (ts < 15.5)
    clips = [
        ClipInput("early", frames[early][::4], ts[early][::4], frames=frames[early], frame_ts_s=ts[early]),
        ClipInput("late", frames[late][::4], ts[late][::4]),  # keyframes only: the fallback
    ]
    res = labeler.score(clips, DFEW)
    for r in res:
        assert r.probs.shape == (7,) and r.probs.sum() == pytest.approx(1) and (r.probs >= 0).all()
    assert DFEW[int(res[0].probs.argmax())] == "sad" and res[0].answer.startswith("sad")
    assert DFEW[int(res[1].probs.argmax())] == "happy"
    peak = AggregateLabeler(aggregate="peak", cropper=labeler.cropper, classifier=labeler.classifier)
    mafw = peak.score(clips[:1], MAFW)[0]
    assert mafw.probs.shape == (11,) and mafw.probs[7:].sum() == 0
    assert MAFW[int(mafw.probs.argmax())] == "sad"


def test_labeler_fails_a_clip_without_face(labeler):
    from emodist.models.face import NoFaceError

    blank = np.full((4, 120, 160, 3), 90, np.uint8)
    with pytest.raises(NoFaceError, match="clip blank: no face") as e:
        labeler.score([ClipInput("blank", blank, np.arange(4.0))], DFEW)
    assert e.value.reason == "no_face"


def test_describer_names_the_rising_class(pexels, labeler):
    from emodist.models.specialist import TrajectoryDescriber

    frames, ts = pexels
    d = TrajectoryDescriber(cropper=labeler.cropper, classifier=labeler.classifier)
    assert isinstance(d, Describer)
    sad_frames, happy_frames = frames[ts < 3.0][2:4], frames[(ts >= 13.5) & (ts < 15.5)][:3]
    # A gap that turns from sad to happy: two sad frames, then three happy ones.
    turn = Gap("pexels", 0, 1.0, 2.0, np.concatenate([sad_frames, happy_frames]), np.linspace(1.0, 2.0, 5))
    steady = Gap("pexels", 1, 13.5, 14.5, happy_frames, ts[(ts >= 13.5) & (ts < 15.5)][:3])
    blank = Gap("pexels", 2, 2.0, 3.0, np.full((3, 90, 120, 3), 90, np.uint8), np.array([2.0, 2.5, 3.0]))
    texts = d.describe([turn, steady, blank])
    assert texts[0].startswith("happy rises to") and "replacing sad" in texts[0], texts[0]
    assert texts[1].startswith("steady happy"), texts[1]
    assert texts[2] == "no face at 2.00-3.00 s"


def test_frames_without_a_face_are_named_not_described_nor_pooled(pexels, labeler):
    """Issue 32: a face that leaves the frame. The describer describes the gap's face
    frames and names the others with their times; the labeler pools face frames only."""
    from emodist.models.specialist import TrajectoryDescriber, aggregate

    frames, ts = pexels
    sad = frames[ts < 3.0][:4]
    blank = np.full((4, *frames.shape[1:]), 90, np.uint8)
    mixed = np.concatenate([sad[:2], blank[:2]])
    gap = Gap("pexels", 0, 1.0, 2.0, mixed, np.array([1.25, 1.5, 1.75, 2.0]))
    d = TrajectoryDescriber(cropper=labeler.cropper, classifier=labeler.classifier)
    text = d.describe([gap])[0]
    assert text.startswith("steady sad") and text.endswith("; no face at 1.75-2.00 s"), text
    # Told by the face stage (face flags on cropped frames): the same rule, no cropper.
    told = TrajectoryDescriber(face_crop=False, classifier=labeler.classifier)
    crops = labeler.cropper.crop_clip(mixed).crops
    flags = np.array([True, False, True, False])
    text = told.describe([Gap("pexels", 0, 1.0, 2.0, crops, gap.ts_s, flags)])[0]
    assert text.endswith("; no face at 1.50 s, 2.00 s") and "sad" in text, text
    # The labeler: the blank frames would pull the mean away from sad; they are left out.
    clip = ClipInput("c", mixed[::2], gap.ts_s[::2], frames=mixed, frame_ts_s=gap.ts_s)
    pooled = labeler.score([clip], DFEW)[0]
    face_only = labeler.classifier.predict(labeler.cropper.crop_clip(mixed).crops[:2]).mean(axis=0)
    assert pooled.probs[DFEW.index("sad")] == pytest.approx(face_only[SAD], abs=1e-6)
    everything = aggregate(labeler.classifier.predict(labeler.cropper.crop_clip(mixed).crops))
    assert abs(everything[SAD] - face_only[SAD]) > 0.05  # the check could fail
    assert pooled.answer.endswith("mean of 2 frames)")
