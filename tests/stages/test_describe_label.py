"""The describe and label stages on real decoded frames with the tiny offline VLM."""
import numpy as np
import pytest

from emodist import schema as col
from emodist.models.base import LabelResult
from emodist.stages.decode import DecodeStage
from emodist.stages.describe import DescribeStage
from emodist.stages.label import LabelStage
from tests.conftest import small_config


@pytest.fixture(scope="module")
def decoded(clips_dir):
    cfg = small_config()
    uris = [str(clips_dir / f"clip_0000{i}.mp4") for i in range(3)]
    batch = {col.CLIP_ID: np.array(["c0", "c1", "c2"], dtype=object), col.URI: np.array(uris, dtype=object)}
    return cfg, DecodeStage(cfg)(batch)


def test_one_description_per_gap_and_keyframes_only_after(decoded, tiny_vlm):
    cfg, batch = decoded
    n_gaps = [int(g.max()) + 1 for g in batch[col.FRAME_GAP]]
    out = DescribeStage(cfg)(dict(batch))
    for i in range(3):
        assert len(out[col.DESCRIPTIONS][i]) == n_gaps[i] >= 1
        assert all(isinstance(d, str) and "\n" not in d for d in out[col.DESCRIPTIONS][i])
        assert [tuple(s) for s in out[col.GAP_SPANS][i]] == [(float(g), float(g + 1)) for g in range(n_gaps[i])]
        assert (out[col.FRAME_GAP][i] == -1).all()  # in-between frames stop here
        assert len(out[col.FRAMES][i]) == n_gaps[i] + 1


def test_label_rows_carry_a_full_distribution(decoded, tiny_vlm):
    cfg, batch = decoded
    out = LabelStage(cfg)(DescribeStage(cfg)(dict(batch)))
    for i in range(3):
        p = np.asarray(out[col.PROBS][i], dtype=np.float64)
        assert p.shape == (7,) and p.sum() == pytest.approx(1, abs=1e-5) and (p > 0).all()
        assert out[col.LABEL][i] == cfg.label_names[int(np.argmax(p))]
        assert out[col.ANSWER][i] in "ABCDEFG"
    assert col.FRAMES not in out  # frames never reach the writer


def test_a_labeler_failure_fails_only_its_clip(decoded, tiny_vlm):
    cfg, batch = decoded
    stage = LabelStage(cfg)
    real = stage.labeler.score

    def flaky(clips, labels):
        if any(c.clip_id == "c1" for c in clips):
            raise RuntimeError("CUDA error: device-side assert")
        return real(clips, labels)

    stage.labeler.score = flaky
    out = stage(DescribeStage(cfg)(dict(batch)))
    assert list(out[col.ERROR_STAGE]) == ["", "label", ""]
    assert "CUDA error" in out[col.ERROR_MESSAGE][1]
    assert out[col.LABEL][0] and out[col.LABEL][2] and out[col.LABEL][1] == ""


def test_invalid_distributions_are_refused():
    with pytest.raises(ValueError, match="invalid distribution"):
        LabelResult(probs=np.array([0.5, 0.6]))
