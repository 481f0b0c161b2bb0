"""A Qwen2.5-VL-shaped model (real architecture at small sizes, random weights; Qwen's
real BPE vocabulary, special tokens and chat template) through `emodist run` with the
transformers backend, from the documented install (no torchvision)."""
import numpy as np
import pyarrow.dataset as pads
import pytest
from typer.testing import CliRunner

from emodist import schema as col
from emodist.cli import app

QWEN = "builtin:tiny-qwen2.5-vl"


@pytest.fixture(scope="module")
def tiny_qwen(fetched):
    from emodist.models.tiny import ensure_tiny_qwen

    return ensure_tiny_qwen()


def test_the_folder_loads_like_the_hub_one_without_torchvision(tiny_qwen):
    from transformers.utils import is_torchvision_available

    from emodist.models.engine import Prompt, run_sync
    from emodist.models.hf_engine import HFEngine
    from emodist.models.prompts import describe_prompt
    from emodist.models.scoring import letter_token_ids

    assert not is_torchvision_available()  # the image-only processor path is the one under test
    eng = HFEngine(str(tiny_qwen))
    try:
        assert type(eng.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
        assert type(eng.processor).__name__ == "Qwen2_5_VLProcessor"
        assert not hasattr(eng.processor, "video_processor")
        # Qwen's real vocabulary: the option letters are the real ids.
        assert letter_token_ids(eng.tokenizer, 2) == [[32, 362], [33, 425]]
        frames = [np.zeros((224, 224, 3), np.uint8)] * 2
        inputs = eng._inputs([Prompt(describe_prompt(2, 0.0, 1.0), frames)])
        assert int((inputs["input_ids"] == 151655).sum()) == 128  # 64 image tokens per 224 px frame
        text = eng.processor.apply_chat_template([{"role": "user", "content": describe_prompt(2, 0.0, 1.0)}],
                                                 add_generation_prompt=True, tokenize=False)
        assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
        assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 2
        assert text.endswith("<|im_start|>assistant\n")
        assert isinstance(run_sync(eng.generate([Prompt(describe_prompt(2, 0.0, 1.0), frames)], 3))[0], str)
    finally:
        eng.close()


def test_emodist_run_labels_every_clip_with_it(ray_local, tiny_qwen, clips_dir, tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(app, [
        "run", "-i", str(clips_dir / "manifest.csv"), "-o", str(out), "--quiet",
        "--set", f"labeler.model={QWEN}", "--set", f"describer.model={QWEN}",
        "--set", "labeler.backend=transformers", "--set", "describer.backend=transformers",
        "--set", "decode.num_cpus=0.5", "--set", "labeler.num_cpus=0.5", "--set", "mode=msce"])
    assert res.exit_code == 0, res.output
    preds = pads.dataset(out / "predictions").to_table().to_pylist()
    assert len(preds) == 10
    for r in preds:
        assert r[col.LABELER_MODEL] == QWEN and r[col.DESCRIBER_MODEL] == QWEN
        assert sum(r[col.PROBS]) == pytest.approx(1, abs=1e-5)
        assert len(r[col.DESCRIPTIONS]) == len(r[col.KEYFRAME_TS]) - 1
