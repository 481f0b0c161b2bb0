"""The describe-and-label stage (emodist/stages/describe_label.py) against the two stages in
sequence, and the face stage's flags through describing and labeling."""
import numpy as np

from emodist import schema as col
from emodist.models.engine import run_sync
from emodist.stages.describe_label import DescribeLabelStage
from tests.stages.conftest import label_stage


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


def test_a_batch_with_no_failed_clip_and_one_carrying_them_make_one_block(decoded, tiny_vlm, clips_dir):
    """The two batches' `carried` columns meet in one output block, as in a Ray actor: a
    batch whose clips all decoded has no carrier (an Arrow null column, which Ray hands
    to the next stage as float NaNs) and a batch of failed clips has one (bytes). A CI
    run stopped on 'Unable to merge: Field carried has incompatible types: binary vs
    float'. Every conversion here is Ray's own."""
    from ray.data._internal.arrow_ops import transform_pyarrow
    from ray.data.block import BlockAccessor

    from emodist.io import rows
    from emodist.output import carry
    from emodist.stages.decode import DecodeStage

    cfg, _ = decoded
    good = rows.table([rows.ok(f"c{i}", str(clips_dir / f"clip_0000{i}.mp4")) for i in range(2)])
    bad = rows.table([rows.ok("c2", str(clips_dir / "clip_00002.mp4")), rows.ok("gone", str(clips_dir / "gone.mp4"))])

    def through(stage, block):
        out = stage(BlockAccessor.for_block(block).to_numpy())
        return BlockAccessor.batch_to_block(run_sync(out) if hasattr(out, "__await__") else out)

    decode, shared = DecodeStage(cfg), DescribeLabelStage(cfg)
    decoded_good, decoded_bad = through(decode, good), through(decode, bad)
    assert decoded_good.schema.field(carry.COLUMN).type == "null"  # what Ray makes of all None
    assert BlockAccessor.for_block(decoded_good).to_numpy()[carry.COLUMN].dtype.kind == "f"
    labeled = [through(shared, b) for b in (decoded_good, decoded_bad)]
    block = transform_pyarrow.concat(labeled)
    batch = BlockAccessor.for_block(block).to_numpy()
    assert list(batch[col.ERROR_STAGE]) == ["", "", "", carry.CARRIED]
    assert list(batch[col.CLIP_ID][:3]) == ["c0", "c1", "c2"] and len(set(batch[col.LABEL][:3]) - {""}) >= 1
    (failed, _, _), = carry.carried(batch)
    assert failed.column(col.CLIP_ID).to_pylist() == ["gone"]
    assert "not found" in failed.column(col.ERROR_MESSAGE)[0].as_py()
