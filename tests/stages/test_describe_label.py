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


def test_contextual_calibration_divides_by_the_content_free_distribution(decoded, tiny_vlm):
    from emodist import debias

    cfg, batch = decoded
    cfg = cfg.model_copy(update={"labeler": cfg.labeler.model_copy(update={"debias": "contextual"})})
    stage = LabelStage(cfg)
    described = DescribeStage(cfg)(dict(batch))
    clip = stage._clip(described, 0)
    gray = clip.keyframes * 0 + 128
    from emodist.models.base import ClipInput

    cf = stage.labeler.score([ClipInput("cf", gray, clip.keyframe_ts_s, [""] * len(clip.descriptions),
                                        clip.gap_spans_s)], cfg.label_names)[0].probs
    out = stage(described)
    raw = np.asarray(out[col.PROBS_RAW][0], dtype=np.float64)
    expected = debias.contextual_calibration(raw[None], cf)[0]
    np.testing.assert_allclose(out[col.PROBS][0], expected, atol=1e-5)
    assert not np.allclose(out[col.PROBS][0], raw, atol=1e-4)
    assert out[col.LABEL][0] == cfg.label_names[int(np.argmax(expected))]


def test_logit_adjustment_with_a_prior(decoded, tiny_vlm):
    cfg, batch = decoded
    prior = [0.3, 0.2, 0.3, 0.1, 0.05, 0.01, 0.04]
    cfg = cfg.model_copy(update={"labeler": cfg.labeler.model_copy(update={"debias": "logit_adjust", "prior": prior})})
    out = LabelStage(cfg)(DescribeStage(cfg)(dict(batch)))
    raw = np.asarray(out[col.PROBS_RAW][1], dtype=np.float64)
    expected = np.exp(np.log(raw) - np.log(prior))
    np.testing.assert_allclose(out[col.PROBS][1], expected / expected.sum(), atol=1e-5)


def test_free_text_answers_never_crash(decoded, tiny_vlm):
    cfg, batch = decoded
    cfg = cfg.model_copy(update={"labeler": cfg.labeler.model_copy(update={"answer_tokens": 4})})
    stage = LabelStage(cfg)
    out = stage(DescribeStage(cfg)(dict(batch)))
    assert all(isinstance(a, str) for a in out[col.ANSWER])  # random model: gibberish
    real = stage.labeler.score

    def odd_answers(clips, labels):
        results = real(clips, labels)
        for r, a in zip(results, ["banana", "", "(B) sad"]):
            r.answer = a
        return results

    stage.labeler.score = odd_answers
    out = stage(DescribeStage(cfg)(dict(batch)))
    assert list(out[col.ANSWER]) == ["banana", "", "(B) sad"]
    assert list(out[col.ANSWER_LABEL]) == ["", "", "sad"]
    assert list(out[col.ERROR_STAGE]) == ["", "", ""]
