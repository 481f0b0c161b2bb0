"""Placement checked at start: device=auto settled for the cluster, and pools the
cluster cannot hold refused with the numbers and the keys to change."""
import logging

import pytest

from emodist import placement
from emodist.config import ConfigError, load_config
from emodist.placement import Node

EIGHT_GPUS = [Node(64, 4), Node(64, 4)] + [Node(32, 0)] * 4


def test_gpu_requests_without_gpus_fail_at_start_and_auto_settles():
    with pytest.raises(ConfigError, match="labeler asks for 1 GPU per actor but the Ray cluster has no GPU"):
        placement.settle(load_config(None, ["labeler.num_gpus=1"]), [Node(2, 0)])
    cfg = placement.settle(load_config(None, ["labeler.backend=vllm", "describer.backend=vllm", "labeler.device=auto",
                                              "decode.num_cpus=0.5", "labeler.num_cpus=0.5"]), [Node(2, 0)])
    assert cfg.labeler.device == "cpu" and cfg.labeler.gpus_per_actor == 0
    cfg = placement.settle(load_config(None, ["labeler.backend=vllm"]), EIGHT_GPUS)
    assert cfg.labeler.device == "cuda" and cfg.labeler.gpus_per_actor == 1


def test_pools_that_do_not_fit_are_refused_with_numbers_and_keys():
    cfg = load_config(None, ["labeler.actors=9", "labeler.num_gpus=1", "decode.actors=4"])
    with pytest.raises(ConfigError) as err:
        placement.settle(cfg, EIGHT_GPUS)
    msg = str(err.value)
    assert "9 GPUs asked in all, the cluster has 8" in msg
    assert "labeler: 9 x (0.5 CPU + 1 GPU)" in msg and "decode: 4 x (1 CPU)" in msg
    assert "lower" in msg and "labeler.actors" in msg


def test_an_actor_bigger_than_any_node_is_named():
    cfg = load_config(None, ["labeler.num_cpus=96"])
    with pytest.raises(ConfigError, match="one labeler actor asks 96 CPU / 0 GPU, the largest node has 64 CPU / 4 GPU"):
        placement.settle(cfg, EIGHT_GPUS)


def test_totals_can_fit_while_the_nodes_cannot():
    """3 actors of 3 GPUs on two 4-GPU nodes: 9 <= 8 fails in total; 2 actors of 3 GPUs
    (6 <= 8 in total) still cannot share one node: the packing says so."""
    assert not placement.fits([placement.Pool("labeler", 3, 1, 3)], [Node(8, 4), Node(8, 4)])
    assert placement.fits([placement.Pool("labeler", 2, 1, 3)], [Node(8, 4), Node(8, 4)])
    assert not placement.fits([placement.Pool("labeler", 2, 1, 3)], [Node(8, 4), Node(8, 2)])


def test_the_2_cpu_default_fits_a_2_cpu_machine():
    cfg = placement.settle(load_config(None, ["decode.num_cpus=0.5", "labeler.num_cpus=0.5"]), [Node(2, 0)])
    assert cfg.decode.device == "cpu"
    with pytest.raises(ConfigError, match="CPUs asked in all, the cluster has 2"):
        placement.settle(load_config(None, ["decode.actors=3"]), [Node(2, 0)])


def test_decode_on_gpu_only_where_its_pool_fits_beside_the_models(monkeypatch, caplog):
    """The issue's cluster: 64 decode actors x 0.1 GPU next to 8 one-GPU model actors on
    8 GPUs would make Ray wait forever; auto decodes on CPU there and says why."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "torchcodec" else real(n, *a))
    cfg = load_config(None, ["decode.actors=64", "decode.num_cpus=2", "labeler.actors=8", "labeler.num_gpus=1"])
    nodes = [Node(16, 1)] * 8 + [Node(64, 0)] * 2
    with caplog.at_level(logging.WARNING, logger="emodist"):
        settled = placement.settle(cfg, nodes)
    assert settled.decode.device == "cpu"
    assert "64 decode actors x 0.1 GPU = 6.4 GPU do not fit beside the model pools" in caplog.text
    small = load_config(None, ["decode.actors=4", "labeler.actors=4", "labeler.num_gpus=1"])
    with caplog.at_level(logging.WARNING, logger="emodist"):
        assert placement.settle(small, nodes).decode.device == "cuda"
    with pytest.raises(ConfigError, match="cannot place"):  # asked for explicitly: refused, not hung
        placement.settle(cfg.model_copy(update={"decode": cfg.decode.model_copy(update={"device": "cuda"})}), nodes)


def test_auto_decodes_on_cpu_without_gpus_and_says_so_once_quietly(caplog):
    with caplog.at_level(logging.INFO, logger="emodist"):
        cfg = placement.settle(load_config(None, ["decode.num_cpus=0.5", "labeler.num_cpus=0.5"]), [Node(2, 0)])
    assert cfg.decode.device == "cpu" and cfg.decode.gpus_per_actor == 0
    said = [r.getMessage() for r in caplog.records if "decode.device=auto" in r.getMessage()]
    assert said == ["decode.device=auto: decoding on cpu (no GPU in the cluster)"]
    assert all(r.levelno == logging.INFO for r in caplog.records if "decode.device=auto" in r.getMessage())


def test_cuda_decode_without_gpus_is_refused_at_start():
    cfg = load_config(None, ["decode.device=cuda", "decode.gpu_share=0.25"])
    assert cfg.decode.gpus_per_actor == 0.25
    with pytest.raises(ConfigError, match="decode.device=cuda but the Ray cluster has no GPU"):
        placement.settle(cfg, [Node(2, 0)])


def test_an_underfed_vllm_engine_is_warned_about(caplog):
    cfg = load_config(None, ["labeler.backend=vllm", "labeler.batch_size=64", "labeler.batches_in_flight=1"])
    with caplog.at_level(logging.WARNING, logger="emodist"):
        placement.settle(cfg, EIGHT_GPUS)
    assert "64 clips in flight per actor (batch_size 64 x batches_in_flight 1) < max_num_seqs 256" in caplog.text
