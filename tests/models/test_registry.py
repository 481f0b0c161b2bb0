"""One engine per distinct model in an actor, for both MSCE stages and both VLM backends,
built from the shipped cluster config's model sections."""
from pathlib import Path

import pytest

from emodist.config import load_config
from emodist.models import hf_engine, vllm_engine
from emodist.stages.describe_label import DescribeLabelStage

ROOT = Path(__file__).resolve().parents[2]


class StandIn:
    """Records how it was built; speaks the engine protocol with the tiny model's tokenizer."""

    built: list = []

    def __init__(self, *args, **kwargs):
        from transformers import AutoTokenizer

        from emodist.models.tiny import ensure_tiny_vlm

        StandIn.built.append((args, kwargs))
        self.model_id = "stand-in"
        self.tokenizer = AutoTokenizer.from_pretrained(str(ensure_tiny_vlm()))

    def close(self):
        pass


@pytest.fixture
def stand_in(monkeypatch, tiny_vlm):
    StandIn.built = []
    monkeypatch.setattr(vllm_engine, "VLLMEngine", StandIn)
    monkeypatch.setattr(hf_engine, "HFEngine", StandIn)
    return StandIn


@pytest.mark.parametrize("backend", ["vllm", "transformers"])
def test_the_cluster_config_builds_one_engine_per_actor(stand_in, backend):
    cfg = load_config(ROOT / "configs" / "cluster-msce.yaml",
                      [f"describer.backend={backend}", f"labeler.backend={backend}"])
    assert cfg.shares_model  # one pool: the model stage runs describe and label together
    stage = DescribeLabelStage(cfg)
    assert len(stand_in.built) == 1, stand_in.built
    assert stage.describing.describer.engine is stage.labeling.labeler.engine
    args, kwargs = stand_in.built[0]
    if backend == "vllm":  # built with the labeler's settings (the pool's), images on
        (model_cfg,) = args
        assert model_cfg.gpu_memory_utilization == 0.9 and kwargs["images"] is True
        assert kwargs["image_size"] == (448, 448)


def test_different_models_get_one_engine_each(stand_in):
    cfg = load_config(ROOT / "configs" / "cluster-msce.yaml",
                      ["describer.model=other/captioner", "run.share_model=true"])
    assert not cfg.shares_model  # different models: two pools, one engine in each
    from emodist.models.registry import Models, build_models

    models = Models(cfg)
    build_models(cfg, roles=("describer",), models=models)
    build_models(cfg, roles=("labeler",), models=models)
    assert len(stand_in.built) == 2 and len(models.constructed) == 2


def test_a_text_mode_labeler_alone_skips_images(stand_in):
    from emodist.models.registry import build_models

    cfg = load_config(ROOT / "configs" / "cluster-msce.yaml", ["mode=text", "describer.model=other/captioner"])
    build_models(cfg, roles=("labeler",))
    assert stand_in.built[-1][1]["images"] is False
