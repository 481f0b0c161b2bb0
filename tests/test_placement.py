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


@pytest.mark.parametrize("backend", ["transformers", "specialist"])
def test_device_auto_is_cpu_for_a_stage_with_no_gpu_reserved(backend):
    """Ray 2.60 shows a node's GPUs to 0-GPU actors: `auto` must follow the reservation,
    not torch.cuda.is_available()."""
    model = ["labeler.model=builtin:tiny-vlm"] if backend == "transformers" else []
    cfg = placement.settle(load_config(None, [f"labeler.backend={backend}", *model]), EIGHT_GPUS)
    assert cfg.labeler.gpus_per_actor == 0 and cfg.labeler.device == "cpu"
    cfg = placement.settle(load_config(None, [f"labeler.backend={backend}", *model, "labeler.num_gpus=1"]), EIGHT_GPUS)
    assert cfg.labeler.device == "cuda"
    # The describer of a shared pool runs where the labeler's actor runs, and stays shared.
    shared = load_config(None, ["labeler.backend=transformers", "describer.backend=transformers", "labeler.num_gpus=1",
                                "labeler.model=builtin:tiny-vlm", "describer.model=builtin:tiny-vlm"])
    cfg = placement.settle(shared, EIGHT_GPUS)
    assert (cfg.describer.device, cfg.labeler.device, cfg.shares_model) == ("cuda", "cuda", True)


def test_cuda_on_a_stage_with_no_gpu_reserved_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="emodist"):
        placement.settle(load_config(None, ["labeler.device=cuda"]), EIGHT_GPUS)
    assert "labeler.device=cuda but labeler.num_gpus=0: Ray reserves no GPU for it" in caplog.text


@pytest.mark.slow
def test_the_start_reads_the_autoscalers_node_types_and_waits_for_a_node_to_join(caplog, private_ray):
    """Real Ray, fake GPUs: a head with 1 CPU and no GPU, the autoscaler's node types
    published where Ray keeps them (one 1-CPU/1-GPU type, max 1), a 1-GPU labeler. The
    start settles the labeler on cuda, asks Ray's autoscaler SDK for it, waits, and goes
    on when a GPU node joins; with a pool the maximum cannot hold it refuses at once."""
    import time

    import ray
    from ray import _raylet
    from ray.cluster_utils import Cluster as RayCluster
    from ray.core.generated import autoscaler_pb2
    from ray.experimental.internal_kv import _internal_kv_put

    cluster = RayCluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    try:
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        published = autoscaler_pb2.ClusterConfig()
        for name, res, most in (("head", {"CPU": 1}, 1), ("gpu", {"CPU": 1, "GPU": 1}, 1)):
            g = published.node_group_configs.add(name=name, max_count=most)
            g.resources.update(res)
        _internal_kv_put(_raylet.GCS_AUTOSCALER_CLUSTER_CONFIG_KEY, published.SerializeToString(),
                         namespace=_raylet.GCS_AUTOSCALER_STATE_NAMESPACE)
        cfg = load_config(None, ["labeler.backend=specialist", "labeler.num_gpus=1", "labeler.num_cpus=0.5",
                                 "decode.num_cpus=0.5", "run.wait_for_nodes_s=120"])
        joined = []

        def sleep(s):  # the node joins during the first wait (raylets start from the main thread only)
            if not joined:
                joined.append(cluster.add_node(num_cpus=1, num_gpus=1))
            time.sleep(s)

        with caplog.at_level(logging.WARNING, logger="emodist"):
            settled = placement.start(cfg, every_s=0.5, sleep=sleep)
        assert settled.labeler.device == "cuda"
        assert "(the autoscaler's node types); asked its autoscaler for them" in caplog.text
        assert "the cluster holds the stage pools after" in caplog.text
        assert sum(n.gpus for n in placement.cluster_nodes()) == 1
        with pytest.raises(ConfigError, match=r"2 GPUs asked in all, the cluster has 1.*the autoscaler's node types"):
            placement.start(load_config(None, ["labeler.actors=2", "labeler.num_gpus=1", "labeler.num_cpus=0.5",
                                               "decode.num_cpus=0.5"]))
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_two_engines_per_gpu_ask_half_a_gpu_each_and_fill_the_gpus():
    """labeler.engines_per_gpu=2 (vLLM): 16 actors on the 8 GPUs of EIGHT_GPUS, 0.5 GPU
    each; a 17th does not fit and is refused with the numbers; an odd count is warned about."""
    sets = ["labeler.backend=vllm", "describer.backend=vllm", "labeler.engines_per_gpu=2", "labeler.num_cpus=2"]
    cfg = placement.settle(load_config(None, [*sets, "labeler.actors=16"]), EIGHT_GPUS)
    assert cfg.labeler.device == "cuda" and cfg.labeler.gpus_per_actor == 0.5
    labeler = next(p for p in placement.pools(cfg) if p.stage == "labeler")
    assert (labeler.actors, labeler.gpus) == (16, 0.5)
    with pytest.raises(ConfigError, match="8.5 GPUs asked in all, the cluster has 8"):
        placement.settle(load_config(None, [*sets, "labeler.actors=17"]), EIGHT_GPUS)


def test_an_odd_pool_of_shared_gpus_is_warned_about(caplog):
    sets = ["labeler.backend=vllm", "describer.backend=vllm", "labeler.engines_per_gpu=2", "labeler.actors=3"]
    with caplog.at_level(logging.WARNING, logger="emodist"):
        placement.settle(load_config(None, sets), EIGHT_GPUS)
    assert "3 actors with engines_per_gpu=2 fill 1 GPUs and 1/2 of another" in caplog.text


def test_engines_per_gpu_that_cannot_share_a_gpu_are_refused():
    with pytest.raises(ConfigError, match=r"engines_per_gpu=2 .* num_gpus=1 asks for more; set num_gpus=0"):
        load_config(None, ["labeler.backend=vllm", "labeler.engines_per_gpu=2", "labeler.num_gpus=1"])
    with pytest.raises(ConfigError, match="engines_per_gpu=2 with tensor_parallel_size=2"):
        load_config(None, ["labeler.backend=vllm", "labeler.engines_per_gpu=2", "labeler.tensor_parallel_size=2"])
    # The other backends take no engines_per_gpu share: their num_gpus stays what Ray is asked.
    assert load_config(None, ["labeler.engines_per_gpu=2", "labeler.num_gpus=1"]).labeler.gpus_per_actor == 1


def test_two_engines_share_one_fake_gpu_on_a_real_ray(fake_gpu_ray):
    """A real Ray node advertising one (fake) GPU: two actors asking the settled labeler's
    share (engines_per_gpu=2) both start on it and see the same GPU; the placement check
    refuses a third before Ray would leave it waiting."""
    import ray

    cfg = placement.settle(load_config(None, ["labeler.backend=vllm", "describer.backend=vllm", "labeler.actors=2",
                                              "labeler.engines_per_gpu=2", "labeler.num_cpus=0.5",
                                              "decode.num_cpus=0.5"]), [Node(2, 1)])

    @ray.remote
    class Engine:
        def gpus(self):
            return ray.get_gpu_ids()

    actors = [Engine.options(num_cpus=cfg.labeler.num_cpus, num_gpus=cfg.labeler.gpus_per_actor).remote()
              for _ in range(cfg.labeler.actors)]
    ids = ray.get([a.gpus.remote() for a in actors], timeout=60)
    assert len(ids[0]) == 1 and ids[0] == ids[1]
    assert ray.available_resources().get("GPU", 0) == 0
    with pytest.raises(ConfigError, match="1.5 GPUs asked in all, the cluster has 1"):
        placement.settle(cfg.model_copy(update={"labeler": cfg.labeler.model_copy(update={"actors": 3})}),
                         [Node(2, 1)])
