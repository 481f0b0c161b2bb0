"""Decoded clips and the tiny offline VLM's describe stage, built once for the model-stage
tests (test_describe.py, test_label.py, test_describe_label.py)."""
import numpy as np
import pytest

from emodist import schema as col
from emodist.stages.decode import DecodeStage
from emodist.stages.describe import DescribeStage
from emodist.stages.label import LabelStage
from tests.conftest import tiny_config


@pytest.fixture(scope="package")
def decoded(clips_dir):
    cfg = tiny_config()
    uris = [str(clips_dir / f"clip_0000{i}.mp4") for i in range(3)]
    batch = {col.CLIP_ID: np.array(["c0", "c1", "c2"], dtype=object), col.URI: np.array(uris, dtype=object)}
    return cfg, DecodeStage(cfg)(batch)


@pytest.fixture(scope="package")
def describe(decoded, tiny_vlm):
    return DescribeStage(decoded[0])


def label_stage(cfg, describe):
    """A label stage on the describe stage's engine (one model copy for the module)."""
    from emodist.models.vlm import VLMLabeler

    engine = describe.describer.engine
    return LabelStage(cfg, labeler=VLMLabeler(cfg.labeler, cfg.mode, cfg.label_names, engine, cfg.run.seed))
