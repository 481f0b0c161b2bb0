"""The describe and label stages on real decoded frames with the tiny offline VLM."""
import asyncio

import numpy as np
import pytest

from emodist import schema as col
from emodist.errors import EngineDead
from emodist.models.base import LabelResult
from emodist.models.engine import run_sync
from emodist.stages.decode import DecodeStage
from emodist.stages.describe import DescribeStage
from emodist.stages.label import LabelStage
from emodist.stages.model import DescribeLabelStage
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def decoded(clips_dir):
    cfg = tiny_config()
    uris = [str(clips_dir / f"clip_0000{i}.mp4") for i in range(3)]
    batch = {col.CLIP_ID: np.array(["c0", "c1", "c2"], dtype=object), col.URI: np.array(uris, dtype=object)}
    return cfg, DecodeStage(cfg)(batch)


@pytest.fixture(scope="module")
def describe(decoded, tiny_vlm):
    return DescribeStage(decoded[0])


def label_stage(cfg, describe):
    """A label stage on the describe stage's engine (one model copy for the module)."""
    from emodist.models.vlm import VLMLabeler

    engine = describe.describer.engine
    return LabelStage(cfg, labeler=VLMLabeler(cfg.labeler, cfg.mode, cfg.label_names, engine, cfg.run.seed))


def test_one_description_per_gap_and_keyframes_only_after(decoded, describe):
    cfg, batch = decoded
    n_gaps = [int(g.max()) + 1 for g in batch[col.FRAME_GAP]]
    out = run_sync(describe(dict(batch)))
    for i in range(3):
        assert len(out[col.DESCRIPTIONS][i]) == n_gaps[i] >= 1
        assert all(isinstance(d, str) and "\n" not in d for d in out[col.DESCRIPTIONS][i])
        assert [tuple(s) for s in out[col.GAP_SPANS][i]] == [(float(g), float(g + 1)) for g in range(n_gaps[i])]
        assert (out[col.FRAME_GAP][i] == -1).all()  # in-between frames stop here
        assert len(out[col.FRAMES][i]) == n_gaps[i] + 1


def test_label_rows_carry_a_full_distribution(decoded, describe):
    cfg, batch = decoded
    out = run_sync(label_stage(cfg, describe)(run_sync(describe(dict(batch)))))
    for i in range(3):
        p = np.asarray(out[col.PROBS][i], dtype=np.float64)
        assert p.shape == (7,) and p.sum() == pytest.approx(1, abs=1e-5) and (p > 0).all()
        assert out[col.LABEL][i] == cfg.label_names[int(np.argmax(p))]
        assert out[col.ANSWER][i] in "ABCDEFG"
    assert col.FRAMES not in out  # frames never reach the writer


def test_the_shared_stage_labels_as_the_two_stages_do_with_one_engine(decoded, describe, tiny_vlm):
    """Describe-then-label per clip in one actor gives the rows of the two stages in
    sequence, and builds one engine for both roles."""
    cfg, batch = decoded
    two = run_sync(label_stage(cfg, describe)(run_sync(describe(dict(batch)))))
    shared = DescribeLabelStage(cfg)
    one = run_sync(shared(dict(batch)))
    assert len(shared.models.constructed) == 1
    assert shared.describing.describer.engine is shared.labeling.labeler.engine
    for i in range(3):
        assert list(one[col.DESCRIPTIONS][i]) == list(two[col.DESCRIPTIONS][i])
        np.testing.assert_allclose(one[col.PROBS][i], two[col.PROBS][i], atol=1e-5)
    assert (one["t_describe_s"] > 0).all() and (one["t_label_s"] > 0).all()


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


def test_the_vlm_is_told_where_the_face_is_absent_never_shown_it(decoded, describe, monkeypatch):
    """Issue 32 on the VLM path: with the face stage's per-frame flags, the describer gets
    a gap's face frames only (a gap with none is not sent), the labeler's prompt says which
    keyframe and in-between frames have no face and carries no image of them, and the row
    records where the face was."""
    from emodist.models.prompts import IMAGE

    cfg, batch = decoded
    i = int(np.argmax([len(ts) for ts in batch[col.FRAME_TS]]))
    ts, gap = batch[col.FRAME_TS][i], batch[col.FRAME_GAP][i]
    assert (gap == -1).sum() >= 3, "a clip with two gaps"
    found = np.ones(len(ts), bool)
    found[(gap == -1) & np.isclose(ts, 1.0)] = False  # the second keyframe
    found[gap == 1] = False  # the whole second gap
    g0 = np.flatnonzero(gap == 0)
    found[g0[-1]] = False  # the last in-between frame of the first gap
    batch = {k: v.copy() for k, v in batch.items()}
    batch[col.FACE_FOUND] = np.empty(len(batch[col.CLIP_ID]), dtype=object)
    for k in range(len(batch[col.CLIP_ID])):
        batch[col.FACE_FOUND][k] = found if k == i else np.ones(len(batch[col.FRAME_TS][k]), bool)

    engine = describe.describer.engine
    asked = {"describe": [], "label": []}
    generate, logprobs = engine.generate, engine.token_logprobs

    async def generating(reqs, n):
        asked["describe"] += [r for r in reqs if r.parts[-1]["text"].startswith("These")]
        return await generate(reqs, n)

    async def scoring(reqs, ids):
        asked["label"] += reqs
        return await logprobs(reqs, ids)

    monkeypatch.setattr(engine, "generate", generating)
    monkeypatch.setattr(engine, "token_logprobs", scoring)
    one = {k: (v[i:i + 1] if isinstance(v, np.ndarray) else v) for k, v in batch.items()}
    out = run_sync(label_stage(cfg, describe)(run_sync(describe(one))))
    assert out[col.ERROR_STAGE][0] == ""
    n_gaps = int((gap == -1).sum()) - 1
    # gap 1 is never described; gap 0 shows its face frames only
    assert len(asked["describe"]) == n_gaps - 1
    assert len(asked["describe"][0].images) == len(g0) - 1
    desc = out[col.DESCRIPTIONS][0]
    last = ts[g0[-1]]
    assert desc[0].endswith(f"; no face at {last:.2f} s"), desc[0]
    g1 = ts[gap == 1]
    assert desc[1] == f"no face at {g1[0]:.2f}-{g1[-1]:.2f} s"
    (prompt,) = asked["label"]
    text = "".join(p["text"] for p in prompt.parts if p["type"] == "text")
    assert "Frame at 1.00 s: no face in view (not shown)." in text and desc[1] in text
    kf_face = found[gap == -1]
    assert len(prompt.images) == kf_face.sum() == sum(p is IMAGE or p == IMAGE for p in prompt.parts)
    assert list(out[col.KEYFRAME_FACE][0]) == kf_face.tolist()
    assert [list(g) for g in out[col.GAP_FACE][0]] == [found[gap == g].tolist() for g in range(n_gaps)]
    from emodist.presence import absent_spans

    assert [list(s) for s in out[col.NO_FACE_SPANS][0]] == absent_spans(ts, found)
    assert col.FACE_FOUND not in out
