"""`emodist finetune`, the driver: check the training manifest and settings, build (or
reuse) the examples, draw each epoch's sample, train on Ray Train, and write the
adapter (or model) with its record.

    OUT/examples/<hash>/   the examples (examples.py)
    OUT/train/             Ray Train's run: a checkpoint per epoch (the last two kept)
    OUT/metrics.jsonl      one line per epoch: loss, accuracy, the class shares drawn
    OUT/adapter/           the trained LoRA adapter (peft layout + emodist_adapter.json);
                           OUT/model/ instead for finetune.method=full
    OUT/summary.json

The same command again resumes from the last checkpoint (and the cached examples); a
finished run is not trained again. One run at a time per OUT (the output lease).
"""
from __future__ import annotations

import json
import logging
import math
import os
import posixpath
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field

import numpy as np

from emodist import nodes, preflight, ray_settings, sampling, storage
from emodist.config import Config, ConfigError
from emodist.finetune import examples as ex
from emodist.finetune import restarts, train
from emodist.output.folder import RunFolder
from emodist.output.lease import Lease
from emodist.models.prompts import PROMPT_VERSION

log = logging.getLogger(__name__)


@dataclass
class FinetuneSummary:
    output: str
    weights: str = ""  # OUT/adapter or OUT/model
    examples: int = 0
    left_out: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)
    epochs: int = 0
    steps: int = 0
    final_loss: float | None = None
    resumed_from_epoch: int | None = None
    # Ray Train's restarts of the training workers in this run (restarts.py): each with the
    # epoch and step it resumed from (epoch None: from the beginning) and the nodes lost before it
    restarts: list[dict] = field(default_factory=list)
    nodes_lost: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def check(cfg: Config) -> None:
    """What fine-tuning needs of the config, before Ray starts."""
    lab = cfg.labeler
    if lab.backend not in ("transformers", "vllm"):
        raise ConfigError(f"finetune trains a VLM labeler; labeler.backend={lab.backend} has no weights to train: "
                          "set labeler.backend=transformers and labeler.model to a VLM")
    if lab.adapter:
        raise ConfigError("labeler.adapter is set: finetune trains a new adapter on labeler.model; unset "
                          "labeler.adapter (or use --set labeler.adapter=null)")
    if cfg.finetune.method == "lora":
        import importlib.util

        if importlib.util.find_spec("peft") is None:
            raise ConfigError("finetune.method=lora needs peft: pip install peft (or finetune.method=full)")
    preflight.check(cfg)


def epoch_samples(classes: np.ndarray, cfg: Config) -> list[np.ndarray]:
    """Each epoch's draws per example, by the configured strategy (refused up front when a
    class has nothing to draw)."""
    ft = cfg.finetune
    try:
        return [sampling.epoch_copies(classes, len(cfg.label_names), ft.strategy, epoch=e, epochs=ft.epochs,
                                      seed=cfg.run.seed, size=ft.epoch_size,
                                      instance_epochs=ft.decoupled_instance_epochs, names=cfg.label_names)
                for e in range(ft.epochs)]
    except ValueError as exc:
        raise ConfigError(f"finetune.strategy={ft.strategy}: {exc}") from None


def epoch_draws(classes: np.ndarray, samples: list[np.ndarray], cfg: Config) -> list[dict]:
    """Per epoch, what the sampler drew (the metrics line's record of it): the examples
    drawn and each class's share of them. Drawn once, here, for the datasets and the log."""
    names = cfg.label_names
    return [{"examples": int(copies.sum()),
             "class_shares": {n: round(float(s), 4) for n, s in
                              zip(names, sampling.class_shares(classes, copies, len(names)))}}
            for copies in samples]


def _repeat(batch, copies: np.ndarray):
    """An epoch's rows: each example as many times as the sampler drew it."""
    import pyarrow as pa

    idx = batch.column(ex.INDEX).to_numpy()
    return batch.take(pa.array(np.repeat(np.arange(len(idx)), copies[idx])))


def epoch_datasets(examples: ex.Examples, samples: list[np.ndarray], cfg: Config) -> dict:
    import ray

    fs, root = storage.filesystem(examples.uri, cfg)
    base = ray.data.read_parquet(root, filesystem=storage.pyarrow_filesystem(fs))
    return {train.dataset_name(e): base.map_batches(_repeat, fn_kwargs={"copies": copies}, batch_format="pyarrow")
            .randomize_block_order(seed=cfg.run.seed + e)
            for e, copies in enumerate(samples)}


def finetune(cfg: Config, train_uri: str, output_uri: str, *, descriptions_from: str | None = None,
             config_hash: str | None = None) -> FinetuneSummary:
    """`config_hash`: the rows of `descriptions_from` to take descriptions from, when that
    output holds rows of two configs (run --new-config)."""
    from emodist.pipeline import init_ray

    t0 = time.perf_counter()
    train_uri, output_uri = storage.absolute(train_uri), storage.absolute(output_uri)
    summary = FinetuneSummary(output=storage.scrub(output_uri))
    check(cfg)
    storage.check_writable(output_uri, cfg)
    # Ray Data's settings and Ray's log levels for this job only (ray_settings.py)
    with Lease(output_uri, cfg, uuid.uuid4().hex[:8]), ray_settings.scoped():
        # The sampler's refusals first, by the manifest's labels: before any clip is decoded.
        classes_of = ex.labeled_clips(cfg, train_uri)
        epoch_samples(np.asarray(list(classes_of.values()), np.int64), cfg)
        if descriptions_from:
            ex.check_descriptions(descriptions_from, cfg, config_hash)
        init_ray(cfg)
        examples = ex.prepare(cfg, train_uri, output_uri, classes_of, descriptions_from, config_hash)
        samples = epoch_samples(examples.classes, cfg)
        counts = np.bincount(examples.classes, minlength=len(cfg.label_names))
        summary.examples, summary.left_out = len(examples.clip_ids), len(examples.left_out)
        summary.class_counts = {n: int(c) for n, c in zip(cfg.label_names, counts)}
        result = _fit(cfg, examples, samples, output_uri, summary)
        lines = read_metrics(output_uri, cfg)  # every epoch's line, also those of runs before a kill
        last = lines[-1] if lines else {}
        summary.epochs, summary.steps = last.get("epoch", -1) + 1, last.get("step", 0)
        summary.final_loss = last.get("loss")
        marks = [m["resumed_from_epoch"] for m in lines if m.get("resumed_from_epoch") is not None]
        summary.resumed_from_epoch = marks[-1] if marks else None
        summary.weights = storage.scrub(_export(result.checkpoint, cfg, output_uri, train_uri, summary))
        summary.seconds = time.perf_counter() - t0
        RunFolder(output_uri, cfg).write_summary(asdict(summary))
    return summary


def _fit(cfg: Config, examples: ex.Examples, samples: list[np.ndarray], output_uri: str, summary: FinetuneSummary):
    import ray.train
    from ray.train.torch import TorchTrainer

    ft = cfg.finetune
    fs, root = storage.filesystem(output_uri, cfg)
    resources = {**ft.resources_per_worker, "CPU": ft.cpus_per_worker,
                 **({"GPU": ft.gpus_per_worker} if ft.gpus_per_worker else {})}
    # emodist's own local Ray has no dashboard, hence no state API, and Ray Train's
    # placement-group cleaner then warns about it every second: errors only there.
    local = not (cfg.run.ray_address or os.environ.get("RAY_ADDRESS"))
    trainer = TorchTrainer(
        train.train_loop,
        train_loop_config={"cfg": cfg.model_dump(mode="json"), "draws": epoch_draws(examples.classes, samples, cfg),
                           "output": output_uri},
        scaling_config=ray.train.ScalingConfig(num_workers=ft.workers, use_gpu=ft.gpus_per_worker > 0,
                                               resources_per_worker=resources),
        # The same name and storage each time: Ray Train resumes from the run's last checkpoint.
        run_config=ray.train.RunConfig(name="train", storage_path=root,
                                       storage_filesystem=storage.pyarrow_filesystem(fs),
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
                                       # a lost node or worker: the workers start again on a node with
                                       # room and train_loop resumes from the last checkpoint
                                       failure_config=ray.train.FailureConfig(
                                           max_failures=ft.max_failures,
                                           controller_failure_limit=_room_waits(cfg.run.wait_for_nodes_s)),
                                       logging_config=ray.train.LoggingConfig(log_level="ERROR" if local else "WARNING")),
        datasets=epoch_datasets(examples, samples, cfg),
    )
    watch = restarts.Watch(output_uri, cfg)
    try:
        return trainer.fit()
    except ray.train.TrainingFailedError as exc:
        from emodist.pipeline import RunStopped

        done = read_metrics(output_uri, cfg)
        resume = f"resume after epoch {done[-1]['epoch']}" if done else "start again (no checkpoint yet)"
        if _found_no_room(exc):
            lost = (f" ({len(watch.lost)} node(s) lost: {', '.join(map(nodes.describe, watch.lost.values()))})"
                    if watch.lost else "")
            raise RunStopped(f"training stopped: the cluster had no room for its {ft.workers} worker(s) "
                             f"({resources} each) for {cfg.run.wait_for_nodes_s:g} s (run.wait_for_nodes_s)"
                             f"{lost}; the checkpoints are kept: once the cluster has room "
                             f"the same command will {resume}; or lower finetune.workers / "
                             "finetune.resources_per_worker, or raise run.wait_for_nodes_s") from None
        why = storage.scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        raise RunStopped(f"training stopped: its workers failed more than finetune.max_failures={ft.max_failures} "
                         f"time(s) ({why}; Ray's log has the rest); the checkpoints are kept: the same command "
                         f"will {resume}, or raise finetune.max_failures") from None
    finally:
        watch.stop()
        summary.restarts = watch.restarts
        summary.nodes_lost = [{"node_id": nid, "address": nodes.describe(n).split(" ")[0]}
                              for nid, n in watch.lost.items()]


def _room_waits(wait_s: float) -> int:
    """Ray Train's starts after the first, so that a finetune waits about run.wait_for_nodes_s
    for room for its workers (in all: Ray Train counts these starts over the whole fit), as a
    run does. Each start waits RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S (60 s) for them, and Ray
    Train's default starts again forever (controller_failure_limit=-1): a finetune whose only
    node with room was lost waited without end, saying nothing."""
    per_start = float(os.environ.get("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", 60))
    return max(0, math.ceil(wait_s / per_start) - 1)


def _found_no_room(exc: BaseException) -> bool:
    """Ray Train gave up starting the workers: no room for them in time (not a failure of theirs)."""
    import ray.train

    failure = getattr(exc, "controller_failure", None)
    return (isinstance(exc, getattr(ray.train, "ControllerError", ()))
            and type(failure).__name__ == "WorkerGroupStartupTimeoutError")


def read_metrics(output_uri: str, cfg: Config) -> list[dict]:
    """OUT/metrics.jsonl: one dict per epoch trained."""
    fs, root = storage.filesystem(output_uri, cfg)
    path = posixpath.join(root, "metrics.jsonl")
    if not fs.exists(path):
        return []
    return [json.loads(s) for s in fs.cat_file(path).decode().splitlines() if s.strip()]


def _export(checkpoint, cfg: Config, output_uri: str, train_uri: str, summary: FinetuneSummary) -> str:
    """The last checkpoint's weights as OUT/adapter (or OUT/model), with their record."""
    from emodist.models.adapters import write_meta

    name = "adapter" if cfg.finetune.method == "lora" else "model"
    target = posixpath.join(output_uri, name)
    fs, root = storage.filesystem(target, cfg)
    with checkpoint.as_directory() as d, tempfile.TemporaryDirectory() as tmp:
        import shutil

        local = os.path.join(tmp, name)
        shutil.copytree(os.path.join(d, train.WEIGHTS), local)
        write_meta(local, base_model=cfg.labeler.model, labels=list(cfg.label_names), mode=cfg.mode,
                   prompt_version=PROMPT_VERSION, method=cfg.finetune.method, strategy=cfg.finetune.strategy,
                   epochs=summary.epochs, steps=summary.steps, train=storage.scrub(train_uri),
                   class_counts=summary.class_counts)
        if fs.exists(root):
            fs.rm(root, recursive=True)
        fs.put(local.rstrip("/") + "/", root, recursive=True)
    return target
