"""Wire the stages into one Ray Data pipeline and commit its rows.

    list clips -> decode (CPU actors) -> describe (model actors) -> label (model actors)
      -> driver: predictions/ part files, failures/ part files, summary.json

Each stage is a fixed-size actor pool sized by config. Only small rows (no frames)
come back to the driver, which writes them in atomic parts as they arrive.
"""
from __future__ import annotations

import json
import logging
import os
import posixpath
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from emodist import schema as col
from emodist import storage
from emodist import placement
from emodist.config import Config, ModelConfig, StageResources
from emodist.models.prompts import PROMPT_VERSION
from emodist.resume import (PRIOR_ATTEMPTS, count_rows, finish_retry, finished_parts, retry_dataset,
                            skip_finished, take_failures_for_retry)
from emodist.io.detect import open_source
from emodist.stages.decode import DecodeStage
from emodist.stages.describe import DescribeStage
from emodist.stages.face import FaceStage
from emodist.stages.label import LabelStage
from emodist.stages.model import DescribeLabelStage
from emodist.writer import PartWriter

log = logging.getLogger(__name__)
STAGES = col.TIMED_STAGES


@dataclass
class RunSummary:
    output: str
    clips: int = 0  # clips this run processed (labeled + failed)
    labeled: int = 0
    failed: int = 0
    skipped_done: int = 0  # rows already in the output before this run (resume)
    duplicates: int = 0  # repeated clip ids in the input, written once
    seconds: float = 0.0
    clips_per_s: float = 0.0
    failures_by_stage: dict[str, int] = field(default_factory=dict)
    # per stage: summed busy seconds, and clips/s of one actor of that stage
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_clips_per_s_per_actor: dict[str, float] = field(default_factory=dict)
    retry: bool = False
    config_hash: str = ""


def init_ray(cfg: Config) -> None:
    import ray

    if ray.is_initialized():
        return
    if cfg.run.ray_address or os.environ.get("RAY_ADDRESS"):
        # Under `ray job submit` RAY_ADDRESS names the cluster the job runs on;
        # run.ray_address='auto' attaches to a cluster started with `ray start` here.
        ray.init(address=cfg.run.ray_address or None, logging_level=logging.WARNING)
    else:
        # A new local Ray, even if another cluster runs on this machine.
        ray.init(address="local", num_cpus=cfg.run.num_cpus, include_dashboard=False,
                 logging_level=logging.WARNING)
    # Our own progress bar and summary replace Ray Data's per-operator bars and logs.
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def _stage(ds, stage_cls, res: StageResources, max_restarts: int | None = None, **kwargs):
    """One fixed-size actor pool. Model stages (async) take `batches_in_flight` batches per
    actor at once and are restarted at most `max_restarts` times when their engine dies."""
    import ray

    import warnings

    extra = {}
    in_flight = res.batches_in_flight if isinstance(res, ModelConfig) else None
    if in_flight:
        # Bounded restarts (Ray Data's default is forever): an engine that dies at every
        # start stops the run instead of looping. No named parameter takes it yet.
        extra["max_restarts"] = max_restarts
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        return ds.map_batches(
            stage_cls,
            fn_constructor_kwargs=kwargs,
            compute=ray.data.ActorPoolStrategy(size=res.actors, max_tasks_in_flight_per_actor=in_flight,
                                               max_concurrent_calls_per_actor=in_flight),
            num_cpus=res.num_cpus,
            num_gpus=res.gpus_per_actor or None,
            batch_size=res.batch_size,
            batch_format="numpy",
            **extra,
        )


def build_dataset(cfg: Config, clips):
    """The lazy Ray dataset of labeled (or failed) rows, one per clip."""
    ds = _stage(clips, DecodeStage, cfg.decode, cfg=cfg)
    if cfg.face.enabled:
        ds = _stage(ds, FaceStage, cfg.face, cfg=cfg)
    wants_all = cfg.labeler.backend == "specialist"
    restarts = cfg.run.max_actor_restarts
    if cfg.shares_model:
        return _stage(ds, DescribeLabelStage, cfg.labeler, restarts, cfg=cfg, keep_all_frames=wants_all)
    ds = _stage(ds, DescribeStage, cfg.describer, restarts, cfg=cfg, keep_all_frames=wants_all)
    return _stage(ds, LabelStage, cfg.labeler, restarts, cfg=cfg)


def _tables(batch: dict, cfg: Config, digest: str):
    """(predictions, failures) of one finished batch, as tables of the output schemas."""
    failed = np.asarray(batch[col.ERROR_STAGE], dtype=object) != ""
    prompt = PROMPT_VERSION if cfg.describer.prompt is None and cfg.labeler.prompt is None else PROMPT_VERSION + "+custom"
    constants = {col.CONFIG_HASH: digest, col.LABEL_NAMES: list(cfg.label_names), col.DEBIAS: cfg.labeler.debias,
                 col.MODE: cfg.mode, col.PROMPT_VERSION: prompt}
    if col.FACE_RATIO not in batch:
        constants[col.FACE_RATIO] = float("nan")
    preds = col.table_of(col.PREDICTIONS, batch, np.flatnonzero(~failed), constants)
    attempts = np.asarray(batch[col.ATTEMPTS], np.int64) if col.ATTEMPTS in batch else np.ones(len(failed), np.int64)
    if PRIOR_ATTEMPTS in batch:
        attempts = attempts + np.asarray(batch[PRIOR_ATTEMPTS], np.int64)
    fails = col.table_of(col.FAILURES, {**batch, col.ATTEMPTS: attempts}, np.flatnonzero(failed),
                         {col.CONFIG_HASH: digest})
    return preds, fails


def _fresh(table, seen: set[str]):
    """`table` without the ids already written by this run (a repeated input id)."""
    import pyarrow as pa

    ids = table.column(col.CLIP_ID).to_pylist()
    keep = []
    for i, cid in enumerate(ids):
        if cid not in seen:
            seen.add(cid)
            keep.append(i)
    return table if len(keep) == len(ids) else table.take(pa.array(keep, pa.int64()))


def run(cfg: Config, input_uri: str, output_uri: str, *, progress: bool = True,
        retry_failures: bool = False) -> RunSummary:
    """Label every clip of `input_uri` not yet in `output_uri`; rows land under
    `output_uri` in parts as they come, so a rerun resumes where a crash left off.
    With `retry_failures`, only the clips of earlier failure rows are run again."""
    t0 = time.perf_counter()
    digest = cfg.digest()
    summary = RunSummary(output=output_uri, config_hash=digest, retry=retry_failures)
    # Before Ray starts: can the input be read (and in what format), the output written?
    source = None if retry_failures else open_source(input_uri, cfg)
    storage.check_writable(output_uri, cfg)
    init_ray(cfg)
    import ray

    cfg = placement.settle(cfg, placement.cluster_nodes())
    if cfg.run.object_store_mb:
        limits = ray.data.DataContext.get_current().execution_options.resource_limits
        ray.data.DataContext.get_current().execution_options.resource_limits = limits.copy(
            object_store_memory=cfg.run.object_store_mb * 2**20)
    if retry_failures:
        aside = take_failures_for_retry(output_uri, cfg)
        if not aside:
            return _finish(summary, output_uri, t0, cfg)
        clips = retry_dataset(aside, cfg)
        expected = count_rows(aside, cfg)
    else:
        clips, expected = source.dataset(), source.count  # count: None when streamed
    finished = finished_parts(output_uri, cfg)
    summary.skipped_done = count_rows(finished, cfg)
    clips = skip_finished(clips, finished, cfg)
    total = None if expected is None else max(0, expected - (0 if retry_failures else summary.skipped_done))
    opts = storage.storage_options(cfg, output_uri)
    preds = PartWriter(posixpath.join(output_uri, "predictions"), col.PREDICTIONS, cfg.run.part_rows,
                       storage_options=opts)
    fails = PartWriter(posixpath.join(output_uri, "failures"), col.FAILURES, cfg.run.part_rows,
                       run_id=preds.run_id, storage_options=opts)
    seen: set[str] = set()  # ids written by this run: a repeated input id is written once
    busy = {s: 0.0 for s in STAGES}
    with _progress(progress, total) as advance:
        for batch in build_dataset(cfg, clips).iter_batches(batch_size=None, batch_format="numpy"):
            p, f = _tables(batch, cfg, digest)
            p, f = _fresh(p, seen), _fresh(f, seen)
            summary.duplicates += len(batch[col.CLIP_ID]) - p.num_rows - f.num_rows
            preds.add(p)
            fails.add(f)
            for stage in f.column(col.ERROR_STAGE).to_pylist():
                summary.failures_by_stage[stage] = summary.failures_by_stage.get(stage, 0) + 1
            for s in busy:
                busy[s] += float(np.sum(batch.get(f"t_{s}_s", 0.0)))
            advance(p.num_rows, f.num_rows)
    preds.flush()
    fails.flush()
    if retry_failures:
        finish_retry(output_uri, cfg)
    summary.labeled, summary.failed = preds.written, fails.written
    summary.clips = summary.labeled + summary.failed
    summary.stage_seconds = {s: round(v, 3) for s, v in busy.items()}
    summary.stage_clips_per_s_per_actor = {s: round(summary.clips / v, 3) for s, v in busy.items() if v > 0}
    return _finish(summary, output_uri, t0, cfg)


def _finish(summary: RunSummary, output_uri: str, t0: float, cfg: Config) -> RunSummary:
    summary.seconds = time.perf_counter() - t0
    summary.clips_per_s = summary.clips / summary.seconds if summary.seconds else 0.0
    fs, root = storage.filesystem(output_uri, cfg)
    fs.makedirs(root, exist_ok=True)
    with fs.open(posixpath.join(root, "summary.json"), "w") as fh:
        json.dump(asdict(summary), fh, indent=2)
    return summary


class _progress:
    """A rich progress bar with failures and clips/s, or nothing."""

    def __init__(self, enabled: bool, total: int | None):
        self.enabled, self.total = enabled, total

    def __enter__(self):
        if not self.enabled:
            return lambda ok, failed: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("labeling"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[failed]} failed"), TextColumn("{task.fields[rate]}"),
                            TimeRemainingColumn())
        self.bar.start()
        task = self.bar.add_task("run", total=self.total, failed=0, rate="")
        start, state = time.perf_counter(), {"failed": 0, "done": 0}

        def advance(ok: int, failed: int) -> None:
            state["failed"] += failed
            state["done"] += ok + failed
            rate = state["done"] / max(time.perf_counter() - start, 1e-9)
            self.bar.update(task, advance=ok + failed, failed=state["failed"], rate=f"{rate:.2f} clips/s")

        return advance

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()
        return False
