"""Placement, checked before any Ray work: settle `device: auto`, refuse at once, with
numbers, a set of actor pools the cluster can never hold, and wait (bounded) for the
nodes of one it can hold once its autoscaler has grown it.

Every stage runs as a fixed-size pool of actors, each asking for CPUs and GPUs
(config). The pools are packed onto nodes first-fit-decreasing, the way a scheduler
would have to place them. Clusters start small and grow (cluster.yaml and
k8s/rayjob.yaml start with one CPU node, and the GPU nodes join minutes later), so the
check is made against the most the cluster can grow to (`Cluster.most`: run.max_nodes,
else the node types its autoscaler publishes, else the launcher's config on the head,
else the nodes alive): a pool that does not fit there is refused naming each pool
(stage, actors x per-actor ask), what the cluster has, and the keys to change. A set
that fits the maximum but not the nodes alive is asked of the autoscaler
(`ray.autoscaler.sdk.request_resources`) and waited for, saying what for, at most
run.wait_for_nodes_s. `device: auto` is settled for what each stage reserves: a model
stage with no GPU reserved runs on the CPU (Ray 2.60 no longer hides the node's GPUs
from 0-GPU actors); `decode.device=auto` decodes on the GPU only when torchcodec is
installed and the decode pool's GPU shares fit beside the model pools; the log says
which and why.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import time
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class Cluster:
    """The nodes alive now and the most the cluster can grow to (`most`; the nodes alive
    when it cannot grow or nobody says how far), with where `most` was read."""

    alive: tuple[Node, ...]
    most: tuple[Node, ...]
    source: str = "the nodes alive"
    groups: tuple[tuple[float, float, int], ...] = field(default=(), compare=False)  # (cpus, gpus, max) as read

    @classmethod
    def fixed(cls, nodes: list[Node] | tuple[Node, ...]) -> Cluster:
        return cls(tuple(nodes), tuple(nodes))

    def shape(self, which: str = "most") -> str:
        nodes = getattr(self, which)
        counts: dict[tuple[float, float], int] = {}
        for n in nodes:
            counts[(n.cpus, n.gpus)] = counts.get((n.cpus, n.gpus), 0) + 1
        return ", ".join(f"{k} x {c:g} CPU/{g:g} GPU" for (c, g), k in counts.items()) or "none"


# Where the cluster launcher (`ray up`) leaves its config on the head, for the autoscaler.
LAUNCHER_CONFIG = "~/ray_bootstrap_config.yaml"


def cluster_nodes() -> list[Node]:
    """The alive nodes of the connected Ray cluster, with their CPUs and GPUs."""
    import ray

    return [Node(float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("GPU", 0)))
            for n in ray.nodes() if n.get("Alive")]


def expand(groups, cap: int) -> tuple[Node, ...]:
    """Nodes of (cpus, gpus, max count) groups; a count of -1 (unbounded) or above `cap`
    is cut to `cap`: more nodes of a type than there are actors never helps them fit."""
    return tuple(Node(float(c), float(g)) for c, g, k in groups for _ in range(cap if k < 0 else min(int(k), cap)))


def launcher_groups(config: dict) -> list[tuple[float, float, int]]:
    """(cpus, gpus, max nodes) per node type of a cluster launcher config (cluster.yaml):
    each type's max_workers, the head type once more. The global max_workers is not
    applied: which types it trims is the autoscaler's choice, so the per-type maxima are
    the most that can ever be there."""
    head = config.get("head_node_type")
    out = []
    for name, t in (config.get("available_node_types") or {}).items():
        res = t.get("resources") or {}
        out.append((float(res.get("CPU", 0)), float(res.get("GPU", 0)), int(t.get("max_workers", 0)) + (name == head)))
    return out


def autoscaler_groups() -> list[tuple[float, float, int]] | None:
    """The node types the autoscaler published to Ray's GCS (what Ray Data reads for its
    own autoscaling), or None when it published none."""
    try:
        import ray._private.state

        config = ray._private.state.state.get_cluster_config()
    except Exception:  # noqa: BLE001 - an older Ray or no GCS access: not known
        return None
    if not config or not config.node_group_configs:
        return None
    return [(float(g.resources.get("CPU", 0)), float(g.resources.get("GPU", 0)), int(g.max_count))
            for g in config.node_group_configs if g.max_count != 0]


def observe(cfg: Config, alive: list[Node] | None = None) -> Cluster:
    """The connected cluster: its nodes alive and the most it can grow to."""
    alive = cluster_nodes() if alive is None else alive
    cap = sum(p.actors for p in pools(cfg)) + 1
    groups, source = None, "the nodes alive"
    if cfg.run.max_nodes is not None:
        groups, source = [(g.cpus, g.gpus, g.count) for g in cfg.run.max_nodes], "run.max_nodes"
    elif (published := autoscaler_groups()) is not None:
        groups, source = published, "the autoscaler's node types"
    elif os.path.isfile(path := os.path.expanduser(LAUNCHER_CONFIG)):
        import yaml

        try:
            with open(path) as f:
                groups, source = launcher_groups(yaml.safe_load(f) or {}), f"the launcher's {LAUNCHER_CONFIG}"
        except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError) as exc:
            log.warning("%s: cannot read the cluster's node types (%s); checking against the nodes alive",
                        path, exc)
    if groups is None:
        return Cluster(tuple(alive), tuple(alive))
    most = expand(groups, cap)
    # The nodes alive count too where the groups miss them (a head started by hand).
    if sum(n.cpus for n in alive) > sum(n.cpus for n in most) or sum(n.gpus for n in alive) > sum(n.gpus for n in most):
        most = tuple(alive)
        source = f"the nodes alive ({source} lists fewer)"
    return Cluster(tuple(alive), most, source, tuple(groups))


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


def _refusal(pool_list: list[Pool], nodes: list[Node] | tuple[Node, ...], source: str = "the nodes alive") -> str:
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
    grows = ("; if the cluster autoscales, set run.max_nodes to the most it can grow to"
             if source == "the nodes alive" else "")
    return (f"cannot place the stage pools on this Ray cluster ({'; '.join(why)}): {asks} "
            f"[+ {READ_TASK_CPUS:g} CPU for reading the input]; nodes ({source}): {Cluster.fixed(nodes).shape()}; "
            f"lower {'; '.join(keys)}" + ("; or set decode.device=cpu" if any(
                p.stage == "decode" and p.gpus for p in pool_list) else "") + grows)


def _settle_models(cfg: Config, gpus: float) -> Config:
    """Each model stage's `device: auto` for what its pool reserves. vLLM asks for its
    tensor-parallel GPUs wherever the cluster has GPUs; the other backends use a GPU only
    where the stage reserves one (Ray 2.60 shows every GPU of the node to a 0-GPU actor,
    so torch.cuda.is_available() would pick one nobody reserved)."""
    shared = cfg.shares_model  # before any update: the describer runs in the labeler's pool
    devices: dict[str, str] = {}
    for name in ("labeler", "describer"):
        m: ModelConfig = getattr(cfg, name)
        if m.device != "auto":
            if m.device.startswith("cuda") and m.backend != "vllm" and m.gpus_per_actor == 0 and not (
                    name == "describer" and shared):
                log.warning("%s.device=%s but %s.num_gpus=0: Ray reserves no GPU for it, so it shares one "
                            "with whatever runs there; set %s.num_gpus", name, m.device, name, name)
            continue
        if name == "describer" and shared:
            devices[name] = devices.get("labeler", cfg.labeler.device)
        elif m.backend == "vllm":
            devices[name] = "cuda" if gpus > 0 else "cpu"
        elif m.backend in ("transformers", "specialist"):
            devices[name] = "cuda" if m.gpus_per_actor > 0 else "cpu"
    updates = {name: getattr(cfg, name).model_copy(update={"device": d}) for name, d in devices.items()}
    return cfg.model_copy(update=updates) if updates else cfg


def settle(cfg: Config, nodes: Cluster | list[Node]) -> Config:
    """`cfg` with every `device: auto` settled for the most this cluster can grow to;
    ConfigError when the pools can never be placed, or a stage asks for GPUs the cluster
    can never have."""
    cluster = nodes if isinstance(nodes, Cluster) else Cluster.fixed(nodes)
    most = list(cluster.most)
    gpus = sum(n.gpus for n in most)
    never = "" if cluster.source == "the nodes alive" else f" and cannot grow to any ({cluster.source})"
    if cfg.decode.device == "cuda" and gpus == 0:
        raise ConfigError(f"decode.device=cuda but the Ray cluster has no GPU{never}; set decode.device=cpu or auto")
    cfg = _settle_models(cfg, gpus)
    for p in pools(cfg):
        if p.gpus > 0 and gpus == 0 and p.stage != "decode":
            raise ConfigError(
                f"{p.stage} asks for {p.gpus:g} GPU per actor but the Ray cluster has no GPU{never}; "
                f"set {p.stage}.num_gpus=0 and {p.stage}.device=cpu, or run on a cluster with GPUs"
            )
    if cfg.decode.device == "auto":
        cfg = _settle_decode(cfg, most, gpus)
    pool_list = pools(cfg)
    if not fits(pool_list, most):
        raise ConfigError(_refusal(pool_list, most, cluster.source))
    _warn_underfed(cfg)
    _warn_shared_gpus(cfg)
    return cfg


def _bundles(pool_list: list[Pool]) -> list[dict]:
    return [{k: v for k, v in (("CPU", p.cpus), ("GPU", p.gpus)) if v} for p in pool_list for _ in range(p.actors)]


def _missing(pool_list: list[Pool], nodes: list[Node]) -> str:
    cpus = sum(p.actors * p.cpus for p in pool_list)
    gpus = sum(p.actors * p.gpus for p in pool_list)
    return (f"the pools need {cpus:g} CPU and {gpus:g} GPU, the {len(nodes)} node(s) alive have "
            f"{sum(n.cpus for n in nodes):g} CPU and {sum(n.gpus for n in nodes):g} GPU")


def request_resources(bundles: list[dict]) -> None:
    """Ask the autoscaler for room for every actor at once (a hint it acts on now, not
    bound by its upscaling speed); a cluster without an autoscaler ignores it."""
    from ray.autoscaler.sdk import request_resources as ask

    ask(bundles=bundles)


def wait_for_nodes(cfg: Config, cluster: Cluster, *, nodes=cluster_nodes, ask=request_resources,
                   sleep=time.sleep, clock=time.monotonic, every_s: float = 5.0, say_every_s: float = 60.0) -> None:
    """Return once the nodes alive hold every pool of the settled `cfg`; till then ask the
    autoscaler for them and say what the start waits for. ConfigError after
    run.wait_for_nodes_s."""
    pool_list = pools(cfg)
    alive = list(cluster.alive)
    if fits(pool_list, alive):
        return
    limit = cfg.run.wait_for_nodes_s
    ask(_bundles(pool_list))
    log.warning("waiting up to %g s for the cluster to grow to hold the stage pools (%s): %s; it can grow to "
                "%s (%s); asked its autoscaler for them", limit, "; ".join(
                    p.describe() for p in pool_list if p.stage != "input"), _missing(pool_list, alive),
                Cluster.fixed(cluster.most).shape(), cluster.source)
    start = said = clock()
    while clock() - start < limit:
        sleep(min(every_s, max(0.0, limit - (clock() - start))))
        alive = nodes()
        if fits(pool_list, alive):
            log.warning("the cluster holds the stage pools after %.0f s: %s", clock() - start,
                        Cluster.fixed(alive).shape())
            return
        if clock() - said >= say_every_s:
            said = clock()
            log.warning("still waiting for nodes (%.0f of %g s): %s", said - start, limit, _missing(pool_list, alive))
    raise ConfigError(
        f"the cluster did not grow to hold the stage pools in {limit:g} s (run.wait_for_nodes_s): "
        f"{_missing(pool_list, alive)} ({Cluster.fixed(alive).shape()}), though it can grow to "
        f"{Cluster.fixed(cluster.most).shape()} ({cluster.source}); check the autoscaler (`ray status`, its log) "
        "and the node quota, or raise run.wait_for_nodes_s")


def start(cfg: Config, **wait) -> Config:
    """At run start, on the connected Ray: settle `cfg` for what the cluster can grow to,
    then wait for the nodes its pools need."""
    cluster = observe(cfg)
    cfg = settle(cfg, cluster)
    wait_for_nodes(cfg, cluster, **wait)
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


def _warn_shared_gpus(cfg: Config) -> None:
    """engines_per_gpu engines share a GPU, each with its share of the memory: a pool that
    is not a whole number of GPUs leaves a share of one GPU idle."""
    for name in ("describer", "labeler"):
        m: ModelConfig = getattr(cfg, name)
        if m.backend != "vllm" or m.engines_per_gpu == 1 or m.gpus_per_actor == 0:
            continue
        if m.actors % m.engines_per_gpu:
            log.warning("%s: %d actors with engines_per_gpu=%d fill %d GPUs and %d/%d of another, whose other "
                        "share stays idle; set %s.actors to a multiple of %d", name, m.actors, m.engines_per_gpu,
                        m.actors // m.engines_per_gpu, m.actors % m.engines_per_gpu, m.engines_per_gpu, name,
                        m.engines_per_gpu)


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
