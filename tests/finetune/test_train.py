"""The training step's prompts: the labeler's own, built from cached examples."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from tests.conftest import tiny_config


def test_training_prompts_hide_face_free_keyframes_as_inference_does(tiny_vlm, monkeypatch):
    """An example whose second keyframe has no face (issue 32) trains on the prompt the
    labeler is given at inference: that keyframe said to have no face and not shown."""
    from emodist import schema as col
    from emodist.finetune import examples, train
    from emodist.models import hf_engine, prompts
    from emodist.models.scoring import PermutationScorer

    cfg = tiny_config("decode.width=64", "decode.height=64")
    kf = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    row = {col.CLIP_ID: "c", examples.KEYFRAMES: kf.tobytes(), examples.SHAPE: list(kf.shape),
           col.KEYFRAME_TS: [0.0, 1.0, 2.0], col.DESCRIPTIONS: ["steady sad (1.0)", "no face at 1.25-2.00 s"],
           col.GAP_SPANS: [[0.0, 1.0], [1.0, 2.0]], col.KEYFRAME_FACE: [True, False, True]}
    # the row as the example cache stores and reads it back
    (row,) = pa.Table.from_pylist([row | {examples.INDEX: 0, examples.CLASS: 1}], schema=examples.SCHEMA).to_pylist()
    clip = examples.clip_input(row)
    assert clip.keyframe_face.tolist() == [True, False, True]

    model, processor = train.load_model(cfg, "cpu")
    letters = PermutationScorer(getattr(processor, "tokenizer", processor), cfg.label_names).letter_ids
    seen, real = [], hf_engine.chat_inputs
    monkeypatch.setattr(hf_engine, "chat_inputs", lambda p, reqs, d: (seen.extend(reqs), real(p, reqs, d))[1])
    order = np.arange(len(cfg.label_names))
    loss, _ = train.option_loss(model, processor, letters, [clip], [order], np.array([1]), cfg, "cpu")
    assert np.isfinite(float(loss.detach()))
    (req,) = seen
    (want,), (images,) = prompts.label_requests([clip], lambda _: [list(cfg.label_names)], cfg.mode)
    assert req.parts == want and len(req.images) == len(images) == 2
    assert np.array_equal(req.images[1], kf[2])  # the third keyframe; the face-free second is not shown
    assert any(p.get("text", "").endswith(prompts.NO_FACE) for p in req.parts)
