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
