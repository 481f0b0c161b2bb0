"""cluster.yaml and k8s/rayjob.yaml parse, and give every stage of the cluster
pipeline config somewhere to run: GPU stages on GPU nodes, pools within capacity."""
from pathlib import Path

import pytest
import yaml

from emodist import placement
from emodist.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def launcher_groups():
    c = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    return {name: (t["resources"].get("CPU", 0), t["resources"].get("GPU", 0), t["max_workers"])
            for name, t in c["available_node_types"].items()}, c


def kuberay_groups():
    job = yaml.safe_load((ROOT / "k8s" / "rayjob.yaml").read_text())
    spec = job["spec"]["rayClusterSpec"]
    groups = {"head": (float(spec["headGroupSpec"]["rayStartParams"]["num-cpus"]), 0.0, 1)}
    for g in spec["workerGroupSpecs"]:
        p = g["rayStartParams"]
        limits = g["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert str(limits.get("nvidia.com/gpu", "0")) == p.get("num-gpus", "0"), g["groupName"]
        groups[g["groupName"]] = (float(p["num-cpus"]), float(p.get("num-gpus", 0)), g["maxReplicas"])
    return groups, job


@pytest.mark.parametrize("groups_of", [launcher_groups, kuberay_groups])
def test_every_stage_fits_and_gpu_stages_land_on_gpu_nodes(groups_of):
    """The shipped cluster shapes hold every pool of configs/cluster-msce.yaml, placed as
    the run's own start-up check places them, with the GPU stages on GPU nodes."""
    groups, _ = groups_of()
    cfg = load_config(ROOT / "configs" / "cluster-msce.yaml")
    nodes = [placement.Node(c, g) for c, g, n in groups.values() for _ in range(n)]
    settled = placement.settle(cfg, nodes)  # raises when a pool cannot be placed
    pools = placement.pools(settled)
    assert sum(p.actors * p.gpus for p in pools) > 0, "the cluster config runs the VLM on GPUs"
    for p in pools:
        fits = [name for name, (c, g, _) in groups.items() if c >= p.cpus and g >= p.gpus]
        assert fits, f"{p.stage}: no node type has {p.cpus} CPUs and {p.gpus} GPUs"
        if p.gpus > 0:
            assert all(groups[n][1] > 0 for n in fits)
    # Without the GPU group, the same config is refused at start, not left waiting.
    with pytest.raises(ConfigError, match="cannot place|no GPU"):
        placement.settle(cfg, [n for n in nodes if n.gpus == 0])


def test_vllm_actors_ask_for_their_tensor_parallel_gpus():
    cfg = load_config(None, ["labeler.backend=vllm", "labeler.tensor_parallel_size=4"])
    assert cfg.labeler.gpus_per_actor == 4
    assert load_config(None, ["labeler.backend=vllm", "labeler.device=cpu"]).labeler.gpus_per_actor == 0


def test_launcher_head_runs_no_stage_actors_and_gpu_pool_is_fixed():
    groups, c = launcher_groups()
    assert groups[c["head_node_type"]][0] == 0
    gpu = c["available_node_types"]["gpu_workers"]
    assert gpu["min_workers"] == gpu["max_workers"]
    assert any("emodist[vllm" in cmd for cmd in c["setup_commands"])


def test_rayjob_entrypoint_uses_the_relabel_job_and_an_existing_config():
    _, job = kuberay_groups()
    entry = job["spec"]["entrypoint"].split()
    assert entry[:2] == ["python", "ray_jobs/relabel.py"]
    config = entry[entry.index("--config") + 1]
    assert (ROOT / config).exists()
    load_config(ROOT / config)


def _shape(groups, which):
    """The nodes of a cluster file at its minimum (what it starts with) or maximum."""
    return [placement.Node(c, g) for c, g, lo, hi in groups.values() for _ in range(lo if which == "min" else hi)]


def launcher_min_max():
    c = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    head = c["head_node_type"]
    return {name: (t["resources"].get("CPU", 0), t["resources"].get("GPU", 0),
                   t["min_workers"] + (name == head), t["max_workers"] + (name == head))
            for name, t in c["available_node_types"].items()}


def kuberay_min_max():
    spec = yaml.safe_load((ROOT / "k8s" / "rayjob.yaml").read_text())["spec"]["rayClusterSpec"]
    groups = {"head": (float(spec["headGroupSpec"]["rayStartParams"]["num-cpus"]), 0.0, 1, 1)}
    for g in spec["workerGroupSpecs"]:
        p = g["rayStartParams"]
        groups[g["groupName"]] = (float(p["num-cpus"]), float(p.get("num-gpus", 0)), g["minReplicas"], g["maxReplicas"])
    return groups


@pytest.mark.parametrize("groups_of", [launcher_min_max, kuberay_min_max])
def test_the_shipped_cluster_starts_at_its_minimum_and_waits_for_its_maximum(groups_of, caplog):
    """Both cluster files start with one CPU node (and the GPU nodes still booting): the
    start settles for the maximum (configs/cluster-msce.yaml's run.max_nodes, which must
    be the files' maximum), asks the autoscaler for the pools and waits, saying what for,
    until the nodes that joined hold them; it refuses nothing that fits the maximum."""
    import logging

    groups = groups_of()
    cfg = load_config(ROOT / "configs" / "cluster-msce.yaml")
    most = sorted((g.cpus, g.gpus) for g in cfg.run.max_nodes for _ in range(g.count))
    assert most == sorted((n.cpus, n.gpus) for n in _shape(groups, "max")), "run.max_nodes is the cluster's maximum"
    lo = [n for n in _shape(groups, "min") if n.gpus == 0]  # the GPU nodes have not joined yet
    cluster = placement.observe(cfg, alive=lo)
    assert cluster.source == "run.max_nodes"
    settled = placement.settle(cfg, cluster)
    assert settled.labeler.device == "cuda" and settled.decode.device == "cpu"
    # Without the maximum, the start-up check refuses its own cluster at its minimum.
    with pytest.raises(ConfigError, match="has no GPU"):
        placement.settle(cfg, lo)
    with pytest.raises(ConfigError, match=r"160.25 CPUs asked in all, the cluster has 96"):
        placement.settle(cfg, _shape(groups, "min"))

    asked, t = [], [0.0]
    full = _shape(groups, "max")

    def nodes():  # the autoscaler adds one node a minute, GPU nodes first
        k = int(t[0] // 60)
        gpu = [n for n in full if n.gpus]
        cpu = [n for n in full if not n.gpus]
        return lo + gpu[:k] + cpu[len(lo) - 1:][: max(0, k - len(gpu))]

    def sleep(s):
        t[0] += s

    with caplog.at_level(logging.WARNING, logger="emodist"):
        placement.wait_for_nodes(settled, cluster, nodes=nodes, ask=asked.append, sleep=sleep, clock=lambda: t[0])
    assert len(asked) == 1 and sum(b.get("GPU", 0) for b in asked[0]) == 8 and len(asked[0]) == 64 + 8 + 1
    assert placement.fits(placement.pools(settled), nodes())
    said = caplog.text
    assert "waiting up to 1200 s for the cluster to grow to hold the stage pools" in said
    assert "the pools need 160.25 CPU and 8 GPU, the 2 node(s) alive have 32 CPU and 0 GPU" in said
    assert "still waiting for nodes" in said and "the cluster holds the stage pools after" in said
    assert 11 * 60 <= t[0] <= 13 * 60  # 8 GPU nodes, then 3 more CPU nodes (4 CPU nodes hold 64 x 2 CPU)


def test_a_cluster_that_does_not_grow_in_time_stops_the_start_with_what_is_missing():
    cfg = load_config(ROOT / "configs" / "cluster-msce.yaml", ["run.wait_for_nodes_s=300"])
    lo = [placement.Node(0, 0), placement.Node(32, 0)]
    cluster = placement.observe(cfg, alive=lo)
    settled = placement.settle(cfg, cluster)
    t = [0.0]
    with pytest.raises(ConfigError) as err:
        placement.wait_for_nodes(settled, cluster, nodes=lambda: lo, ask=lambda b: None,
                                 sleep=lambda s: t.__setitem__(0, t[0] + s), clock=lambda: t[0])
    assert t[0] == 300
    assert ("the cluster did not grow to hold the stage pools in 300 s (run.wait_for_nodes_s): the pools need "
            "160.25 CPU and 8 GPU, the 2 node(s) alive have 32 CPU and 0 GPU") in str(err.value)
    assert "can grow to 1 x 0 CPU/0 GPU, 8 x 32 CPU/0 GPU, 8 x 8 CPU/1 GPU (run.max_nodes)" in str(err.value)
    # What can never fit is refused at once, naming the maximum it was checked against.
    with pytest.raises(ConfigError, match=r"9 GPUs asked in all, the cluster has 8.*nodes \(run.max_nodes\)"):
        placement.settle(load_config(ROOT / "configs" / "cluster-msce.yaml", ["labeler.actors=9"]), cluster)


def test_the_launcher_config_read_as_the_autoscaler_reads_it():
    """On a `ray up` head the node types come from ~/ray_bootstrap_config.yaml (cluster.yaml as synced)."""
    c = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    assert sorted(placement.launcher_groups(c)) == [(0.0, 0.0, 1), (8.0, 1.0, 8), (32.0, 0.0, 8)]


def test_gpu_nodes_can_decode_on_nvdec():
    """torchcodec needs FFmpeg's shared libraries and the driver's `video` capability
    (libnvcuvid); without either it decodes on the CPU. Every shipped GPU image asks for both."""
    docker = (ROOT / "docker" / "Dockerfile").read_text()
    assert "apt-get install" in docker and " ffmpeg" in docker
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility,video" in docker and "gpu" in docker.split("pip install")[1]
    _, job = kuberay_groups()
    for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        container = g["template"]["spec"]["containers"][0]
        if container["resources"]["limits"].get("nvidia.com/gpu"):
            env = {e["name"]: e["value"] for e in container.get("env", [])}
            assert set(env["NVIDIA_DRIVER_CAPABILITIES"].split(",")) >= {"compute", "utility", "video"}
    _, c = launcher_groups()
    assert any("emodist[" in cmd and "gpu" in cmd.split("emodist[")[1].split("]")[0] for cmd in c["setup_commands"])
    assert any("install" in cmd and "ffmpeg" in cmd for cmd in c["setup_commands"])
