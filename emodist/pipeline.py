"""Wire the stages into one Ray Data pipeline and commit its rows.

    list clips -> decode (CPU actors) -> describe (model actors) -> label (model actors)
      -> driver: predictions/ part files, failures/ part files, summary.json

Each stage is a fixed-size actor pool sized by config. Only small rows (no frames)
come back to the driver, which writes them in atomic parts as they arrive.
"""
from __future__ import annotations

import json
import logging
import posixpath
import time
from dataclasses import asdict, dataclass, field

import fsspec
import numpy as np
import pyarrow as pa

from emodist import schema as col
from emodist.config import Config, StageResources
from emodist.models.prompts import PROMPT_VERSION
from emodist.sources import list_clips
from emodist.stages.decode import DecodeStage
from emodist.stages.describe import DescribeLabelStage, DescribeStage
from emodist.stages.label import LabelStage
from emodist.writer import PartWriter

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    output: str
    clips: int = 0
    labeled: int = 0
    failed: int = 0
    seconds: float = 0.0
    clips_per_s: float = 0.0
    failures_by_stage: dict[str, int] = field(default_factory=dict)
    config_hash: str = ""


def init_ray(cfg: Config) -> None:
    import ray

    if ray.is_initialized():
        return
    if cfg.run.ray_address:
        ray.init(address=cfg.run.ray_address, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=cfg.run.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    # Our own progress bar replaces Ray Data's per-operator bars.
    ray.data.DataContext.get_current().enable_progress_bars = False


def _stage(ds, stage_cls, res: StageResources, **kwargs):
    import ray

    return ds.map_batches(
        stage_cls,
        fn_constructor_kwargs=kwargs,
        compute=ray.data.ActorPoolStrategy(size=res.actors),
        num_cpus=res.num_cpus,
        num_gpus=res.num_gpus or None,
        batch_size=res.batch_size,
        batch_format="numpy",
    )


def build_dataset(cfg: Config, clips: pa.Table):
    """The lazy Ray dataset of labeled (or failed) rows, one per clip."""
    import ray

    block = max(1, cfg.decode.batch_size)
    blocks = [clips.slice(s, block) for s in range(0, clips.num_rows, block)]
    ds = ray.data.from_arrow(blocks)
    ds = _stage(ds, DecodeStage, cfg.decode, cfg=cfg)
    wants_all = cfg.labeler.backend == "specialist"
    if cfg.shares_model:
        return _stage(ds, DescribeLabelStage, cfg.labeler, cfg=cfg, keep_all_frames=wants_all)
    ds = _stage(ds, DescribeStage, cfg.describer, cfg=cfg, keep_all_frames=wants_all)
    return _stage(ds, LabelStage, cfg.labeler, cfg=cfg)


def _rows(batch: dict, cfg: Config, digest: str) -> tuple[list[dict], list[dict]]:
    preds, fails = [], []
    describer = cfg.describer.model if cfg.uses_descriptions else ""
    for i in range(len(batch[col.CLIP_ID])):
        base = {col.CLIP_ID: str(batch[col.CLIP_ID][i]), col.URI: str(batch[col.URI][i]),
                col.CONFIG_HASH: digest}
        if batch[col.ERROR_STAGE][i]:
            fails.append(base | {
                col.ERROR_STAGE: str(batch[col.ERROR_STAGE][i]),
                col.ERROR_TYPE: str(batch[col.ERROR_TYPE][i]),
                col.ERROR_MESSAGE: str(batch[col.ERROR_MESSAGE][i]),
                col.ATTEMPTS: 1,
            })
            continue
        preds.append(base | {
            col.REF_LABEL: str(batch[col.REF_LABEL][i]),
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
            col.DESCRIBER_MODEL: describer,
            col.LABELER_MODEL: cfg.labeler.model,
            col.TIMINGS: {s: float(batch[f"t_{s}_s"][i]) for s in ("decode", "describe", "label")},
        })
    return preds, fails


def run(cfg: Config, input_uri: str, output_uri: str, *, progress: bool = True) -> RunSummary:
    """Label every clip of `input_uri`; rows land under `output_uri`."""
    t0 = time.perf_counter()
    clips = list_clips(input_uri)
    digest = cfg.digest()
    summary = RunSummary(output=output_uri, clips=clips.num_rows, config_hash=digest)
    init_ray(cfg)
    preds = PartWriter(posixpath.join(output_uri, "predictions"), col.PREDICTIONS, cfg.run.part_rows)
    fails = PartWriter(posixpath.join(output_uri, "failures"), col.FAILURES, cfg.run.part_rows,
                       run_id=preds.run_id)
    ds = build_dataset(cfg, clips)
    with _progress(progress, clips.num_rows) as advance:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            p, f = _rows(batch, cfg, digest)
            preds.add(p)
            fails.add(f)
            for row in f:
                stage = row[col.ERROR_STAGE]
                summary.failures_by_stage[stage] = summary.failures_by_stage.get(stage, 0) + 1
            advance(len(p), len(f))
    preds.flush()
    fails.flush()
    summary.labeled, summary.failed = preds.written, fails.written
    summary.seconds = time.perf_counter() - t0
    summary.clips_per_s = summary.clips / summary.seconds if summary.seconds else 0.0
    with fsspec.open(posixpath.join(output_uri, "summary.json"), "w") as fh:
        json.dump(asdict(summary), fh, indent=2)
    return summary


class _progress:
    """A rich progress bar with failures and clips/s, or nothing."""

    def __init__(self, enabled: bool, total: int):
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
