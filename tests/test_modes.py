"""The four labeling modes through the real Ray pipeline, on the same clips."""
import numpy as np
import pyarrow.dataset as pads
import pytest

from emodist import pipeline
from emodist import schema as col
from emodist.models.prompts import PROMPT_VERSION
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def three_clips(clips_dir, tmp_path_factory):
    m = tmp_path_factory.mktemp("m") / "three.csv"
    m.write_text("uri,label\n" + "".join(f"{clips_dir}/clip_0000{i}.mp4,happy\n" for i in range(3)))
    return m


@pytest.mark.parametrize("mode", ["sparse", "msce", "dense", "text"])
def test_each_mode_writes_its_mode_version_and_both_distributions(ray_local, tiny_vlm, clips_dir, three_clips, tmp_path, mode):
    cfg = tiny_config(f"mode={mode}", "plan.sparse_fps=2", "plan.dense_max_frames=12", "labeler.debias=contextual",
                       f"input.root={clips_dir}")
    summary = pipeline.run(cfg, str(three_clips), str(tmp_path), progress=False)
    assert (summary.labeled, summary.failed) == (3, 0)
    rows = pads.dataset(tmp_path / "predictions").to_table().to_pylist()
    assert sorted(r[col.CLIP_ID] for r in rows) == ["clip_00000", "clip_00001", "clip_00002"]
    for r in rows:
        assert r[col.MODE] == mode and r[col.PROMPT_VERSION] == PROMPT_VERSION
        assert r[col.DEBIAS] == "contextual" and r[col.REF_LABEL] == "happy"
        for key in (col.PROBS, col.PROBS_RAW):
            assert len(r[key]) == 7 and sum(r[key]) == pytest.approx(1, abs=1e-5)
        kf = np.asarray(r[col.KEYFRAME_TS])
        if mode == "sparse":
            np.testing.assert_allclose(kf, np.arange(len(kf)) * 0.5)
            assert r[col.DESCRIPTIONS] == [] and r[col.DESCRIBER_MODEL] == ""
        elif mode == "dense":
            assert len(kf) == 12 and r[col.DESCRIPTIONS] == []
        else:
            np.testing.assert_allclose(kf, np.arange(len(kf)))
            assert len(r[col.DESCRIPTIONS]) == len(kf) - 1 and r[col.DESCRIBER_MODEL] == "builtin:tiny-vlm"
