"""cluster.yaml and k8s/rayjob.yaml parse, and give every stage of the cluster
pipeline config somewhere to run: GPU stages on GPU nodes, pools within capacity."""
from pathlib import Path

import pytest
import yaml

from emodist.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def stage_requests(cfg):
    """(stage, actors, cpus per actor, gpus per actor) as the pipeline asks Ray."""
    out = [("decode", cfg.decode.actors, cfg.decode.num_cpus, cfg.decode.gpus_per_actor)]
    if not cfg.shares_model:
        d = cfg.describer
        out.append(("describe", d.actors, d.num_cpus, d.gpus_per_actor))
    lab = cfg.labeler
    return out + [("label", lab.actors, lab.num_cpus, lab.gpus_per_actor)]


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
    groups, _ = groups_of()
    cfg = load_config(ROOT / "configs" / "cluster-msce.yaml")
    total_cpu = sum(c * n for c, _, n in groups.values())
    total_gpu = sum(g * n for _, g, n in groups.values())
    cpu_needed = gpu_needed = 0.0
    for stage, actors, cpus, gpus in stage_requests(cfg):
        fits = [name for name, (c, g, _) in groups.items() if c >= cpus and g >= gpus]
        assert fits, f"{stage}: no node type has {cpus} CPUs and {gpus} GPUs"
        if gpus > 0:
            assert all(groups[n][1] > 0 for n in fits)
        cpu_needed += actors * cpus
        gpu_needed += actors * gpus
    assert gpu_needed > 0, "the cluster config runs the VLM on GPUs"
    assert gpu_needed <= total_gpu and cpu_needed <= total_cpu


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
