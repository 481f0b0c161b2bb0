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

import fsspec
import numpy as np

from emodist import schema as col
from emodist import storage
from emodist import placement
from emodist.config import Config, ModelConfig, StageResources
from emodist.models.prompts import PROMPT_VERSION
from emodist.resume import (PRIOR_ATTEMPTS, count_rows, finish_retry, finished_parts, retry_dataset,
                            skip_finished, take_failures_for_retry)
from emodist.sources import open_source
from emodist.stages.decode import DecodeStage
from emodist.stages.describe import DescribeStage
from emodist.stages.face import FaceStage
from emodist.stages.label import LabelStage
from emodist.stages.model import DescribeLabelStage
from emodist.writer import PartWriter

log = logging.getLogger(__name__)
STAGES = ("decode", "face", "describe", "label")


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


def _rows(batch: dict, cfg: Config, digest: str) -> tuple[list[dict], list[dict]]:
    preds, fails = [], []
    for i in range(len(batch[col.CLIP_ID])):
        base = {col.CLIP_ID: str(batch[col.CLIP_ID][i]), col.URI: str(batch[col.URI][i]),
                col.REF_LABEL: str(batch[col.REF_LABEL][i]), col.CONFIG_HASH: digest}
        if batch[col.ERROR_STAGE][i]:
            prior = int(batch[PRIOR_ATTEMPTS][i]) if PRIOR_ATTEMPTS in batch else 0
            fails.append(base | {
                col.ERROR_STAGE: str(batch[col.ERROR_STAGE][i]),
                col.ERROR_TYPE: str(batch[col.ERROR_TYPE][i]),
                col.ERROR_MESSAGE: str(batch[col.ERROR_MESSAGE][i]),
                col.ATTEMPTS: prior + int(batch[col.ATTEMPTS][i]) if col.ATTEMPTS in batch else prior + 1,
            })
            continue
        preds.append(base | {
            col.LABEL: str(batch[col.LABEL][i]),
            col.LABEL_NAMES: list(cfg.label_names),
            col.PROBS: np.asarray(batch[col.PROBS][i]).tolist(),
            col.PROBS_RAW: np.asarray(batch[col.PROBS_RAW][i]).tolist(),
            col.DEBIAS: cfg.labeler.debias,
            col.ANSWER: str(batch[col.ANSWER][i]),
            col.ANSWER_LABEL: str(batch[col.ANSWER_LABEL][i]),
            col.KEYFRAME_TS: np.asarray(batch[col.KEYFRAME_TS][i]).tolist(),
            col.DESCRIPTIONS: [str(d) for d in batch[col.DESCRIPTIONS][i]],
            col.GAP_SPANS: [list(map(float, s)) for s in batch[col.GAP_SPANS][i]],
            col.DURATION_S: float(batch[col.DURATION_S][i]),
            col.NATIVE_FPS: float(batch[col.NATIVE_FPS][i]),
            col.DECODE_DEVICE: str(batch[col.DECODE_DEVICE][i]),
            col.MODE: cfg.mode,
            col.PROMPT_VERSION: PROMPT_VERSION if cfg.describer.prompt is None and cfg.labeler.prompt is None else PROMPT_VERSION + "+custom",
            col.FACE_RATIO: float(batch[col.FACE_RATIO][i]) if col.FACE_RATIO in batch else float("nan"),
            col.DESCRIBER_MODEL: str(batch[col.DESCRIBER_MODEL][i]),
            col.LABELER_MODEL: str(batch[col.LABELER_MODEL][i]),
            col.TIMINGS: {s: float(batch[f"t_{s}_s"][i]) if f"t_{s}_s" in batch else 0.0 for s in STAGES},
        })
    return preds, fails


def run(cfg: Config, input_uri: str, output_uri: str, *, progress: bool = True,
        retry_failures: bool = False) -> RunSummary:
    """Label every clip of `input_uri` not yet in `output_uri`; rows land under
    `output_uri` in parts as they come, so a rerun resumes where a crash left off.
    With `retry_failures`, only the clips of earlier failure rows are run again."""
    t0 = time.perf_counter()
    digest = cfg.digest()
    summary = RunSummary(output=output_uri, config_hash=digest, retry=retry_failures)
    storage.set_fsspec_defaults(cfg)
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
        aside = take_failures_for_retry(output_uri)
        if not aside:
            return _finish(summary, output_uri, t0)
        clips = retry_dataset(aside)
        expected = count_rows(aside)
    else:
        clips, expected = source.dataset(), source.count  # count: None when streamed
    finished = finished_parts(output_uri)
    summary.skipped_done = count_rows(finished)
    clips = skip_finished(clips, finished)
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
            p, f = _rows(batch, cfg, digest)
            fresh_p = [r for r in p if r[col.CLIP_ID] not in seen]
            seen.update(r[col.CLIP_ID] for r in fresh_p)
            fresh_f = [r for r in f if r[col.CLIP_ID] not in seen]
            seen.update(r[col.CLIP_ID] for r in fresh_f)
            summary.duplicates += len(p) + len(f) - len(fresh_p) - len(fresh_f)
            preds.add(fresh_p)
            fails.add(fresh_f)
            for row in fresh_f:
                stage = row[col.ERROR_STAGE]
                summary.failures_by_stage[stage] = summary.failures_by_stage.get(stage, 0) + 1
            for s in busy:
                busy[s] += float(np.sum(batch.get(f"t_{s}_s", 0.0)))
            advance(len(fresh_p), len(fresh_f))
    preds.flush()
    fails.flush()
    if retry_failures:
        finish_retry(output_uri)
    summary.labeled, summary.failed = preds.written, fails.written
    summary.clips = summary.labeled + summary.failed
    summary.stage_seconds = {s: round(v, 3) for s, v in busy.items()}
    summary.stage_clips_per_s_per_actor = {s: round(summary.clips / v, 3) for s, v in busy.items() if v > 0}
    return _finish(summary, output_uri, t0)


def _finish(summary: RunSummary, output_uri: str, t0: float) -> RunSummary:
    summary.seconds = time.perf_counter() - t0
    summary.clips_per_s = summary.clips / summary.seconds if summary.seconds else 0.0
    fs, root = fsspec.core.url_to_fs(output_uri)
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
