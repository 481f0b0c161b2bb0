"""The label stage (emodist/stages/label.py) on real decoded frames with the tiny offline VLM:
distributions, a clip's failure against a fatal one, concurrency and the per-row debiasing."""
import asyncio

import numpy as np
import pytest

from emodist import schema as col
from emodist.errors import EngineDead
from emodist.models.base import LabelResult
from emodist.models.engine import run_sync
from tests.stages.conftest import label_stage


def test_label_rows_carry_a_full_distribution(decoded, describe):
    cfg, batch = decoded
    out = run_sync(label_stage(cfg, describe)(run_sync(describe(dict(batch)))))
    for i in range(3):
        p = np.asarray(out[col.PROBS][i], dtype=np.float64)
        assert p.shape == (7,) and p.sum() == pytest.approx(1, abs=1e-5) and (p > 0).all()
        assert out[col.LABEL][i] == cfg.label_names[int(np.argmax(p))]
        assert out[col.ANSWER][i] in "ABCDEFG"
    assert col.FRAMES not in out  # frames never reach the writer


def test_a_labeler_failure_fails_only_its_clip(decoded, describe):
    cfg, batch = decoded
    stage = label_stage(cfg, describe)
    real = stage.labeler.score

    async def flaky(clips, labels):
        if any(c.clip_id == "c1" for c in clips):
            raise ValueError("the prompt is longer than the model's context")
        return await real(clips, labels)

    stage.labeler.score = flaky
    out = run_sync(stage(run_sync(describe(dict(batch)))))
    assert list(out[col.ERROR_STAGE]) == ["", "label", ""]
    assert "longer than the model's context" in out[col.ERROR_MESSAGE][1]
    assert out[col.LABEL][0] and out[col.LABEL][2] and out[col.LABEL][1] == ""


@pytest.mark.parametrize("error", [EngineDead("engine core died"), RuntimeError("CUDA error: device-side assert")])
def test_a_dead_engine_or_device_is_fatal_not_a_failed_clip(decoded, describe, error):
    """Outside Ray the fatal error is raised (inside an actor the process exits and Ray
    restarts it): no clip is turned into a failure row for it."""
    cfg, batch = decoded
    stage = label_stage(cfg, describe)

    async def dies(clips, labels):
        raise error

    stage.labeler.score = dies
    described = run_sync(describe(dict(batch)))
    with pytest.raises(type(error)):
        run_sync(stage(described))
    assert list(described[col.ERROR_STAGE]) == ["", "", ""]


def test_clips_of_one_batch_are_labeled_concurrently(decoded, describe):
    """Each clip's label request goes in as soon as the clip is ready: the labeler sees
    all three clips at once, not one after another."""
    cfg, batch = decoded
    stage = label_stage(cfg, describe)
    real = stage.labeler.score
    inside, most = [0], [0]

    async def counting(clips, labels):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        await asyncio.sleep(0.05)
        try:
            return await real(clips, labels)
        finally:
            inside[0] -= 1

    stage.labeler.score = counting
    run_sync(stage(run_sync(describe(dict(batch)))))
    assert most[0] == 3


def test_invalid_distributions_are_refused():
    with pytest.raises(ValueError, match="invalid distribution"):
        LabelResult(probs=np.array([0.5, 0.6]))


def test_contextual_calibration_divides_by_the_content_free_distribution(decoded, describe):
    from emodist import debias
    from emodist.models.base import ClipInput

    cfg, batch = decoded
    cfg = cfg.model_copy(update={"labeler": cfg.labeler.model_copy(update={"debias": "contextual"})})
    stage = label_stage(cfg, describe)
    described = run_sync(describe(dict(batch)))
    clip = stage.step.clip_input(described, 0)
    gray = clip.keyframes * 0 + 128
    cf = run_sync(stage.labeler.score([ClipInput("cf", gray, clip.keyframe_ts_s, [""] * len(clip.descriptions),
                                                 clip.gap_spans_s)], cfg.label_names))[0].probs
    out = run_sync(stage(described))
    raw = np.asarray(out[col.PROBS_RAW][0], dtype=np.float64)
    expected = debias.contextual_calibration(raw[None], cf)[0]
    np.testing.assert_allclose(out[col.PROBS][0], expected, atol=1e-5)
    assert not np.allclose(out[col.PROBS][0], raw, atol=1e-4)
    assert out[col.LABEL][0] == cfg.label_names[int(np.argmax(expected))]


def test_logit_adjustment_with_a_prior(decoded, describe):
    cfg, batch = decoded
    prior = [0.3, 0.2, 0.3, 0.1, 0.05, 0.01, 0.04]
    cfg = cfg.model_copy(update={"labeler": cfg.labeler.model_copy(update={"debias": "logit_adjust", "prior": prior})})
    out = run_sync(label_stage(cfg, describe)(run_sync(describe(dict(batch)))))
    raw = np.asarray(out[col.PROBS_RAW][1], dtype=np.float64)
    expected = np.exp(np.log(raw) - np.log(prior))
    np.testing.assert_allclose(out[col.PROBS][1], expected / expected.sum(), atol=1e-5)


def test_a_prior_with_an_unseen_class_is_floored_as_eval_floors_it(decoded, describe):
    """A 0 in labeler.prior (a class with no training clips) made log(prior) -inf and
    failed every clip; it takes the rarest seen class's share, as in `emodist eval`."""
    cfg, batch = decoded
    prior = [0.3, 0.2, 0.3, 0.1, 0.05, 0.0, 0.05]
    cfg = cfg.model_copy(update={"labeler": cfg.labeler.model_copy(update={"debias": "logit_adjust", "prior": prior})})
    out = run_sync(label_stage(cfg, describe)(run_sync(describe(dict(batch)))))
    assert not any(out[col.ERROR_STAGE])
    raw = np.asarray(out[col.PROBS_RAW][1], dtype=np.float64)
    floored = np.array([0.3, 0.2, 0.3, 0.1, 0.05, 0.05, 0.05]) / 1.05
    expected = np.exp(np.log(raw) - np.log(floored))
    np.testing.assert_allclose(out[col.PROBS][1], expected / expected.sum(), atol=1e-5)


def test_free_text_answers_never_crash(decoded, describe):
    cfg, batch = decoded
    cfg = cfg.model_copy(update={"labeler": cfg.labeler.model_copy(update={"answer_tokens": 4})})
    stage = label_stage(cfg, describe)
    out = run_sync(stage(run_sync(describe(dict(batch)))))
    assert all(isinstance(a, str) for a in out[col.ANSWER])  # random model: gibberish
    real = stage.labeler.score
    answers = {"c0": "banana", "c1": "", "c2": "(B) sad"}

    async def odd_answers(clips, labels):
        results = await real(clips, labels)
        for r, c in zip(results, clips):
            r.answer = answers[c.clip_id]
        return results

    stage.labeler.score = odd_answers
    out = run_sync(stage(run_sync(describe(dict(batch)))))
    assert list(out[col.ANSWER]) == ["banana", "", "(B) sad"]
    assert list(out[col.ANSWER_LABEL]) == ["", "", "sad"]
    assert list(out[col.ERROR_STAGE]) == ["", "", ""]
