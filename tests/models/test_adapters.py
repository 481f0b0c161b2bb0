"""LoRA adapters on the labeler: where they attach, the record beside them, and the
checks a run makes before it loads one."""
from __future__ import annotations

import numpy as np
import pytest

from emodist.config import ConfigError
from emodist.models import adapters
from tests.conftest import tiny_config


def _model(tiny_vlm):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(tiny_vlm)


@pytest.fixture(scope="module")
def random_adapter(tiny_vlm, tmp_path_factory):
    """A LoRA adapter with random (non-zero) weights on the tiny VLM's language model,
    recorded as `emodist finetune` records its adapters."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = _model(tiny_vlm)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                  target_modules=adapters.lora_target_modules(model, ["language"])))
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    peft_model.save_pretrained(out)
    adapters.write_meta(out, base_model="builtin:tiny-vlm", labels=list(tiny_config().label_names), mode="msce")
    return out


def test_lora_targets_are_the_chosen_parts_never_the_lm_head(tiny_vlm):
    model = _model(tiny_vlm)
    language = adapters.lora_target_modules(model, ["language"])
    assert language and all("language_model" in n for n in language)
    assert not any(n.endswith("lm_head") for n in language)
    both = adapters.lora_target_modules(model, ["language", "projector", "vision"])
    assert any("vision_tower" in n for n in both) and any("multi_modal_projector" in n for n in both)
    assert set(language) < set(both)


def test_the_adapter_changes_the_labelers_distributions(tiny_vlm, random_adapter):
    from emodist.models.engine import run_sync
    from emodist.models.hf_engine import HFEngine
    from emodist.models.vlm import VLMLabeler
    from emodist.models.base import ClipInput

    cfg = tiny_config("mode=sparse")
    rng = np.random.default_rng(0)
    clips = [ClipInput(f"c{i}", rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8), np.array([0.0, 1.0]))
             for i in range(3)]

    def probs(engine, adapter):
        lab = VLMLabeler(cfg.labeler, cfg.mode, cfg.label_names, engine, adapter=adapter)
        return np.stack([r.probs for r in run_sync(lab.score(clips, cfg.label_names))])

    base = HFEngine("builtin:tiny-vlm", "cpu")
    with_adapter = HFEngine("builtin:tiny-vlm", "cpu", adapters={"labeler": str(random_adapter)})
    try:
        p0, p1 = probs(base, None), probs(with_adapter, "labeler")
        # the same engine, asked for the base model, gives the base distributions
        np.testing.assert_allclose(probs(with_adapter, None), p0, atol=1e-5)
    finally:
        base.close()
        with_adapter.close()
    assert np.abs(p1 - p0).max() > 1e-3


def test_pin_sets_the_fingerprint_and_the_hash_follows_the_weights(random_adapter, tmp_path):
    import shutil

    plain = tiny_config()
    pinned = adapters.pin(tiny_config(f"labeler.adapter={random_adapter}"))
    assert pinned.labeler.adapter_fingerprint == adapters.fingerprint(random_adapter)
    assert pinned.digest() != plain.digest()
    # other weights at the same path: another fingerprint, another hash
    other = tmp_path / "adapter"
    shutil.copytree(random_adapter, other)
    weights = other / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    adapters.write_meta(other, base_model="builtin:tiny-vlm", labels=list(plain.label_names), mode="msce")
    assert adapters.pin(tiny_config(f"labeler.adapter={other}")).digest() != pinned.digest()
    # runs without an adapter keep the hash they had before adapters existed
    assert "adapter_fingerprint" not in plain.label_settings()["labeler"]


def test_an_adapter_trained_under_another_label_set_is_refused(random_adapter):
    with pytest.raises(ConfigError, match=r"labeler.adapter=.* was trained for the labels \['happy', 'sad', "
                                          r".*'fear'\], and this run labels \[.*'contempt'.*\]: its option letters "
                                          "would mean other classes; set labels to the adapter's, or fine-tune for these"):
        adapters.pin(tiny_config(f"labeler.adapter={random_adapter}", "labels=mafw"))
    # the same labels in another order are another label set too: letters map to classes by order
    with pytest.raises(ConfigError, match="was trained for the labels"):
        adapters.pin(tiny_config(f"labeler.adapter={random_adapter}",
                                 "labels=[sad, happy, neutral, angry, surprise, disgust, fear]"))


def test_an_adapter_of_another_base_model_or_a_missing_folder_is_refused(random_adapter, tmp_path):
    with pytest.raises(ConfigError, match=r"was trained on 'builtin:tiny-vlm', not labeler.model='builtin:tiny-qwen2.5-vl'; "
                                          "set labeler.model=builtin:tiny-vlm"):
        adapters.pin(tiny_config(f"labeler.adapter={random_adapter}", "labeler.model=builtin:tiny-qwen2.5-vl"))
    with pytest.raises(ConfigError, match=r"labeler.adapter=.*nowhere: no such folder; point it at the adapter folder"):
        adapters.pin(tiny_config(f"labeler.adapter={tmp_path / 'nowhere'}"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not an adapter folder \\(no adapter_config.json\\)"):
        adapters.pin(tiny_config(f"labeler.adapter={tmp_path / 'empty'}"))
