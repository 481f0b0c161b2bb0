"""Placement, checked before any Ray work: settle `device: auto`, and refuse at once,
with numbers, a set of actor pools the cluster cannot hold (Ray would wait forever).

Every stage runs as a fixed-size pool of actors, each asking for CPUs and GPUs
(config). The pools are packed onto the cluster's nodes first-fit-decreasing, the way a
scheduler would have to place them; if some actor finds no node, the run is refused
naming each pool (stage, actors x per-actor ask), what the cluster has, and the keys to
change. `decode.device=auto` decodes on the GPU only when torchcodec is installed and
the decode pool's GPU shares fit beside the model pools; the log says which and why.
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass

from emodist.config import Config, ConfigError, ModelConfig, StageResources
from emodist.io.source import READ_NUM_CPUS as READ_TASK_CPUS  # one listing / manifest / shard read task

log = logging.getLogger("emodist")



@dataclass(frozen=True)
class Node:
    cpus: float
    gpus: float


@dataclass(frozen=True)
class Pool:
    stage: str  # the config section that sizes it
    actors: int
    cpus: float  # per actor
    gpus: float  # per actor

    def describe(self) -> str:
        ask = f"{self.cpus:g} CPU" + (f" + {self.gpus:g} GPU" if self.gpus else "")
        return f"{self.stage}: {self.actors} x ({ask})"


def cluster_nodes() -> list[Node]:
    """The alive nodes of the connected Ray cluster, with their CPUs and GPUs."""
    import ray

    return [Node(float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("GPU", 0)))
            for n in ray.nodes() if n.get("Alive")]


def pools(cfg: Config) -> list[Pool]:
    """The fixed pools a run starts (and one read task for the input)."""
    out = [Pool("input", 1, READ_TASK_CPUS, 0.0)]
    stages: list[tuple[str, StageResources]] = [("decode", cfg.decode)]
    if cfg.face.enabled:
        stages.append(("face", cfg.face))
    if cfg.uses_descriptions and not cfg.shares_model:
        stages.append(("describer", cfg.describer))
    stages.append(("labeler", cfg.labeler))
    for name, res in stages:
        out.append(Pool(name, res.actors, res.num_cpus, res.gpus_per_actor))
    return out


def fits(pool_list: list[Pool], nodes: list[Node]) -> bool:
    """First-fit-decreasing: can every actor of every pool get a node?"""
    free = [[n.cpus, n.gpus] for n in nodes]
    actors = sorted(((p.gpus, p.cpus) for p in pool_list for _ in range(p.actors)), reverse=True)
    eps = 1e-9
    for gpus, cpus in actors:
        for f in free:
            if f[0] + eps >= cpus and f[1] + eps >= gpus:
                f[0] -= cpus
                f[1] -= gpus
                break
        else:
            return False
    return True


def _refusal(pool_list: list[Pool], nodes: list[Node]) -> str:
    cpus = sum(p.actors * p.cpus for p in pool_list)
    gpus = sum(p.actors * p.gpus for p in pool_list)
    has_cpu, has_gpu = sum(n.cpus for n in nodes), sum(n.gpus for n in nodes)
    big_cpu = max((n.cpus for n in nodes), default=0)
    big_gpu = max((n.gpus for n in nodes), default=0)
    asks = "; ".join(p.describe() for p in pool_list if p.stage != "input")
    why = []
    if cpus > has_cpu + 1e-9:
        why.append(f"{cpus:g} CPUs asked in all, the cluster has {has_cpu:g}")
    if gpus > has_gpu + 1e-9:
        why.append(f"{gpus:g} GPUs asked in all, the cluster has {has_gpu:g}")
    for p in pool_list:
        if p.cpus > big_cpu + 1e-9 or p.gpus > big_gpu + 1e-9:
            why.append(f"one {p.stage} actor asks {p.cpus:g} CPU / {p.gpus:g} GPU, the largest node has "
                       f"{big_cpu:g} CPU / {big_gpu:g} GPU")
    if not why:
        why.append("the actors do not pack onto the nodes")
    keys = sorted({f"{p.stage}.actors, {p.stage}.num_cpus" + (f", {p.stage}.num_gpus" if p.gpus else "")
                   for p in pool_list if p.stage != "input"})
    shape = ", ".join(f"{n.cpus:g} CPU/{n.gpus:g} GPU" for n in nodes[:8]) + (" ..." if len(nodes) > 8 else "")
    return (f"cannot place the stage pools on this Ray cluster ({'; '.join(why)}): {asks} "
            f"[+ {READ_TASK_CPUS:g} CPU for reading the input]; nodes: {shape or 'none'}; "
            f"lower {'; '.join(keys)}" + ("; or set decode.device=cpu" if any(
                p.stage == "decode" and p.gpus for p in pool_list) else ""))


def settle(cfg: Config, nodes: list[Node]) -> Config:
    """`cfg` with every `device: auto` settled for this cluster; ConfigError when the
    pools cannot be placed, or a stage asks for GPUs the cluster does not have."""
    gpus = sum(n.gpus for n in nodes)
    updates: dict = {}
    for name in ("describer", "labeler"):
        m: ModelConfig = getattr(cfg, name)
        if m.device == "auto" and m.backend == "vllm":
            updates[name] = m.model_copy(update={"device": "cuda" if gpus > 0 else "cpu"})
    if cfg.decode.device == "cuda" and gpus == 0:
        raise ConfigError("decode.device=cuda but the Ray cluster has no GPU; set decode.device=cpu or auto")
    cfg = cfg.model_copy(update=updates) if updates else cfg
    for p in pools(cfg):
        if p.gpus > 0 and gpus == 0 and p.stage != "decode":
            raise ConfigError(
                f"{p.stage} asks for {p.gpus:g} GPU per actor but the Ray cluster has no GPU; "
                f"set {p.stage}.num_gpus=0 and {p.stage}.device=cpu, or run on a cluster with GPUs"
            )
    if cfg.decode.device == "auto":
        cfg = _settle_decode(cfg, nodes, gpus)
    pool_list = pools(cfg)
    if not fits(pool_list, nodes):
        raise ConfigError(_refusal(pool_list, nodes))
    _warn_underfed(cfg)
    return cfg


def _settle_decode(cfg: Config, nodes: list[Node], gpus: float) -> Config:
    on_gpu = cfg.model_copy(update={"decode": cfg.decode.model_copy(update={"device": "cuda"})})
    if gpus == 0:
        device, why = "cpu", "no GPU in the cluster"
    elif importlib.util.find_spec("torchcodec") is None:
        device, why = "cpu", "torchcodec is not installed"
    elif not fits(pools(on_gpu), nodes):
        need = cfg.decode.actors * cfg.decode.gpu_share
        device, why = "cpu", (f"{cfg.decode.actors} decode actors x {cfg.decode.gpu_share:g} GPU = {need:g} GPU "
                              "do not fit beside the model pools")
    else:
        device, why = "cuda", "GPUs and torchcodec present, and the decode pool fits beside the model pools"
    # Said quietly where nothing else was possible (no GPU); loudly where GPUs go unused.
    (log.info if gpus == 0 else log.warning)("decode.device=auto: decoding on %s (%s)", device, why)
    return on_gpu if device == "cuda" else cfg.model_copy(
        update={"decode": cfg.decode.model_copy(update={"device": "cpu"})})


def _warn_underfed(cfg: Config) -> None:
    """Ray's LLM stage's rule: fewer clips in flight than the engine batches leaves it idle."""
    for name in ("describer", "labeler"):
        m: ModelConfig = getattr(cfg, name)
        if m.backend != "vllm" or (name == "describer" and (cfg.shares_model or not cfg.uses_descriptions)):
            continue
        clips = m.batch_size * m.batches_in_flight
        if clips < m.max_num_seqs:
            log.warning("%s: %d clips in flight per actor (batch_size %d x batches_in_flight %d) < "
                        "max_num_seqs %d: the engine may run below its batch capacity; raise "
                        "%s.batch_size or %s.batches_in_flight", name, clips, m.batch_size,
                        m.batches_in_flight, m.max_num_seqs, name, name)
