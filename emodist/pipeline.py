"""Wire the stages into one Ray Data pipeline and run it into an output folder.

    list clips -> decode (CPU actors) -> [face] -> describe + label (model actors)
      -> driver: predictions/ and failures/ parts (output/commit.py), summary.json

Each stage is a fixed-size actor pool sized by config. Only small rows (no frames) come
back to the driver. Before any Ray work the run checks its config, models and input,
takes the output's lease (one run at a time, output/lease.py) and reads what the output already
holds (output/resume.py): every clip gets exactly one row, however the run is started again.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field

from emodist import nodes, placement, preflight, ray_settings, storage
from emodist import schema as col
from emodist.config import Config, ModelConfig, StageResources
from emodist.io.source import open_source
from emodist.models import adapters
from emodist.output import resume
from emodist.output.commit import Committer
from emodist.output.folder import OUTPUT_PARTS, RunFolder, log_path
from emodist.output.lease import Lease
from emodist.output.writer import OutputFull, PartWriter
from emodist.stages.decode import DecodeStage
from emodist.stages.describe import DescribeStage
from emodist.stages.face import FaceStage
from emodist.stages.label import LabelStage
from emodist.stages.describe_label import DescribeLabelStage

log = logging.getLogger(__name__)
STAGES = col.TIMED_STAGES


class RunStopped(RuntimeError):
    """The run stopped before the end (storage full, the lease lost, a stage that cannot be
    restarted); what was committed stays and the same command resumes."""


@dataclass
class RunSummary:
    output: str
    clips: int = 0  # clips this run processed (labeled + failed)
    labeled: int = 0
    failed: int = 0
    skipped_done: int = 0  # clips of this input already done before this run (resume)
    duplicates: int = 0  # repeated (clip_id, uri) pairs in the input, written once
    seconds: float = 0.0
    clips_per_s: float = 0.0
    failures_by_stage: dict[str, int] = field(default_factory=dict)
    # per stage: summed busy seconds, and clips/s of one actor of that stage
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_clips_per_s_per_actor: dict[str, float] = field(default_factory=dict)
    retry: bool = False
    # Worker nodes that died during the run (spot nodes taken back): their stage actors
    # were restarted elsewhere and their batches retried (nodes.py)
    nodes_lost: list[dict] = field(default_factory=list)
    actor_restarts: int = 0
    batches_retried: dict[str, int] = field(default_factory=dict)  # by stage (read: the listing's tasks)
    rows_retried: int = 0  # at most this many clips' stage work was done again
    config_hash: str = ""
    run_id: str = ""

    @property
    def all_failed(self) -> bool:
        return self.clips > 0 and self.labeled == 0


def _attaches(cfg: Config) -> bool:
    """The run attaches to a Ray cluster (else it starts a local Ray on this machine)."""
    return bool(cfg.run.ray_address or os.environ.get("RAY_ADDRESS"))


def init_ray(cfg: Config) -> None:
    import ray

    if ray.is_initialized():
        return
    # log_to_driver=False: the actors' output (a failing actor's traceback, printed again at
    # each retry: hundreds of lines; Ray Train's controller and workers, Ray Data's plans)
    # stays in Ray's log files, on a cluster as on this machine; a failure the run cannot go
    # on from is one console line naming a log file (actor_failure).
    if _attaches(cfg):
        # Under `ray job submit` RAY_ADDRESS names the cluster the job runs on;
        # run.ray_address='auto' attaches to a cluster started with `ray start` here.
        ray.init(address=cfg.run.ray_address or None, logging_level=logging.WARNING, log_to_driver=False)
    else:
        # A new local Ray, even if another cluster runs on this machine, listening on the
        # loopback interface only. Ray 2.60 says at every local start that it turned token
        # authentication on: right for a loopback-only Ray, and not news to the user.
        auth = logging.getLogger("ray._private.authentication.authentication_token_setup")
        before = auth.level
        auth.setLevel(logging.ERROR)
        try:
            ray.init(address="local", num_cpus=cfg.run.num_cpus, include_dashboard=False,
                     logging_level=logging.WARNING, _node_ip_address="127.0.0.1", log_to_driver=False)
        finally:
            auth.setLevel(before)
    # Ray Data's progress bars and loggers are quieted per run (ray_settings.scoped), not here.
    _spend_constructor_args_line()


class _Unused:
    def __init__(self, *_):
        pass


def _spend_constructor_args_line() -> None:
    """Ray's driver prints once per process, at ERROR, 'core_worker.cc: Actor ... has
    constructor arguments in the object store and max_restarts > 0' when it creates such
    an actor. Every Ray Data actor pool is one: Ray Data itself passes each pool actor
    its DataContext and the stage's transformer as ray.put refs and restarts its actors by
    default; it holds both refs for the pool's life, so the restart warned about works.
    emodist's own constructor arguments (the config) are not what puts them there, and
    no restarts (max_restarts=0) would lose a run to one killed actor. So the line is
    spent here on a throwaway actor while the driver's stderr points at /dev/null for
    that one synchronous call; Ray's driver log file keeps the line."""
    import sys

    import ray

    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        actor = ray.remote(num_cpus=0, max_restarts=1)(_Unused).remote(ray.put(None))
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    ray.kill(actor, no_restart=True)


def _stage(ds, stage_cls, res: StageResources, max_restarts: int | None = None, **kwargs):
    """One fixed-size actor pool. Model stages (async) take `batches_in_flight` batches per
    actor at once and are restarted at most `max_restarts` times when their engine dies."""
    import warnings

    import ray

    extra = {}
    in_flight = res.batches_in_flight if isinstance(res, ModelConfig) else None
    if max_restarts is not None:
        # Bounded restarts (Ray Data's default is forever): an engine (or a GPU decoder)
        # that dies at every start stops the run instead of looping. No named parameter takes it yet.
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


def frames_dataset(cfg: Config, clips):
    """Decode (and crop faces): the frames the model stages read, by the temporal plan."""
    # The context is this dataset's own (Ray copies it at the read and shares it with every
    # stage after), so the setting lasts as long as this run's dataset.
    clips.context.target_max_block_size = int(cfg.run.block_mb * 2**20)
    ds = _stage(clips, DecodeStage, cfg.decode, cfg.run.max_actor_restarts if cfg.decode.device == "cuda" else None,
                cfg=cfg)
    if cfg.face.enabled:
        ds = _stage(ds, FaceStage, cfg.face, cfg=cfg)
    return ds


def described_dataset(cfg: Config, clips):
    """Keyframes and the descriptions of the gaps between them, one row per clip: what
    the labeler reads (fine-tuning's examples, built by the stages `run` uses)."""
    return _stage(frames_dataset(cfg, clips), DescribeStage, cfg.describer, cfg.run.max_actor_restarts, cfg=cfg)


def build_dataset(cfg: Config, clips):
    """The lazy Ray dataset of labeled (or failed) rows, one per clip."""
    ds = frames_dataset(cfg, clips)
    wants_all = cfg.labeler.backend == "specialist"
    restarts = cfg.run.max_actor_restarts
    if cfg.shares_model:
        return _stage(ds, DescribeLabelStage, cfg.labeler, restarts, cfg=cfg, keep_all_frames=wants_all)
    ds = _stage(ds, DescribeStage, cfg.describer, restarts, cfg=cfg, keep_all_frames=wants_all)
    return _stage(ds, LabelStage, cfg.labeler, restarts, cfg=cfg)


def run(cfg: Config, input_uri: str, output_uri: str, *, progress: bool = True,
        retry_failures: bool = False, new_config: bool = False) -> RunSummary:
    """Label every clip of `input_uri` not yet in `output_uri`; rows land under
    `output_uri` in parts as they come, so a rerun resumes where a crash left off.
    With `retry_failures`, only the clips of earlier failure rows are run again. With
    `new_config`, an output labeled under another config is labeled again beside it.

    Raises ConfigError / SourceError (could not start: nothing ran), LeaseHeld (another
    run holds the output), RunStopped (stopped midway: a rerun resumes)."""
    t0 = time.perf_counter()
    for uri, what in ((input_uri, "--input"), (output_uri, "--output"), (cfg.input.root or "", "input.root")):
        storage.refuse_userinfo(uri, what)
    input_uri, output_uri = storage.absolute(input_uri), storage.absolute(output_uri)
    if cfg.input.root and storage.is_local(cfg.input.root):  # relative to this directory, not a worker's
        cfg = cfg.model_copy(update={"input": cfg.input.model_copy(update={"root": storage.absolute(cfg.input.root)})})
    cfg = adapters.pin(cfg)  # adapters checked against their records; their weights' hash joins the config hash
    digest, run_id = cfg.digest(), uuid.uuid4().hex[:8]
    summary = RunSummary(output=storage.scrub(output_uri), config_hash=digest, retry=retry_failures, run_id=run_id)
    # Before Ray starts: models, input and output, in seconds.
    preflight.check_settings(cfg)  # first: certain and instant (the model checks may ask the hub)
    preflight.check(cfg)
    if not _attaches(cfg):
        preflight.check_devices(cfg)
    for warning in preflight.random_weights(cfg):
        log.warning(warning)
    source = None if retry_failures else open_source(input_uri, cfg)
    storage.check_writable(output_uri, cfg)
    with Lease(output_uri, cfg, run_id) as lease, _sigterm_stops() as sigterm, \
            _readable_when_stopped(output_uri, cfg, run_id), ray_settings.scoped() as data_context:
        try:
            init_ray(cfg)
        except SystemExit as exc:  # Ray's own SIGTERM handler while it starts: sys.exit(15)
            if exc.code == 15:
                raise _terminated() from None
            raise
        sigterm.install()  # again: Ray's start put its own handler (a native stack, then abort) in place
        cfg = placement.start(cfg)  # settled for the most the cluster can grow to; waits for its nodes
        if cfg.run.object_store_mb:  # on the run's own context: its datasets copy it when they read
            limits = data_context.execution_options.resource_limits
            data_context.execution_options.resource_limits = limits.copy(
                object_store_memory=cfg.run.object_store_mb * 2**20)
        if source is not None:
            source.check_ids()
        # A retry sets the failure parts aside first: their clips are to do, not done.
        aside = resume.take_failures_for_retry(output_uri, cfg) if retry_failures else []
        state = resume.load(output_uri, cfg, digest, new_config)
        resume.record_config(output_uri, cfg, digest)
        if retry_failures:
            if not aside:
                return _finish(summary, output_uri, t0, cfg)
            clips, total = resume.retry_dataset(aside, cfg, state.done_ref), resume.count_rows(aside, cfg)
        else:
            clips, total = source.dataset(state.done_ref), source.count()
        watch = nodes.Watch.start(cfg.run.wait_for_nodes_s)  # worker nodes lost mid-run: said, waited for, reported
        try:
            with Committer(output_uri, cfg, digest, run_id) as committer, _progress(progress, total) as advance:
                for batch in build_dataset(cfg, clips).iter_batches(batch_size=None, batch_format="numpy"):
                    skipped = committer.counts.skipped
                    advance(*committer.add(batch), committer.counts.skipped - skipped)
                    if lease.lost.is_set():
                        raise RunStopped(f"{storage.scrub(output_uri)}: another run took over this output's lease; "
                                         "this run stopped (its committed parts are kept)")
                    sigterm.check()
                sigterm.check()
            committer.close()
        except OutputFull as exc:
            raise RunStopped(str(exc)) from None
        except RunStopped:
            if watch.gave_up:  # actors lost with a node found no room in time (nodes.py stopped the run)
                raise RunStopped(watch.gave_up) from None
            raise
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - an actor's failure: one line, the stack in a log
            raise RunStopped(actor_failure(exc, output_uri, run_id)) from None
        finally:
            watch.stop()
        if retry_failures:
            resume.finish_retry(output_uri, cfg)
        counts = committer.counts
        summary.labeled, summary.failed = counts.labeled, counts.failed
        summary.skipped_done, summary.duplicates = counts.skipped, counts.duplicates
        summary.failures_by_stage = counts.failures_by_stage
        summary.clips = summary.labeled + summary.failed
        watch.report(summary, {"decode": cfg.decode.batch_size, "face": cfg.face.batch_size,
                               "describe": cfg.describer.batch_size, "label": cfg.labeler.batch_size,
                               "describelabel": cfg.labeler.batch_size})
        summary.stage_seconds = {s: round(v, 3) for s, v in counts.busy_s.items()}
        summary.stage_clips_per_s_per_actor = {s: round(summary.clips / v, 3) for s, v in counts.busy_s.items() if v > 0}
        return _finish(summary, output_uri, t0, cfg)


class _readable_when_stopped:
    """A run that stops midway (RunStopped: an actor failed, SIGTERM, the lease lost)
    leaves predictions/ and failures/ readable, a schema-only part where a folder has
    none, so that DuckDB, pandas and polars read the folder; rows not yet committed are not
    written (the rerun labels them)."""

    def __init__(self, output_uri: str, cfg: Config, run_id: str):
        self.args = (output_uri, cfg, run_id)

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if kind is None or not issubclass(kind, RunStopped):
            return False
        output_uri, cfg, run_id = self.args
        try:
            folder = RunFolder(output_uri, cfg)
            for sub in OUTPUT_PARTS:
                PartWriter.into(folder, sub, run_id).ensure_one()
        except Exception as err:  # noqa: BLE001 - the stop's own message matters more
            log.info("could not leave schema-only parts: %s", err)
        return False


class Terminated(RunStopped):
    """SIGTERM: the run stops between batches' commits, keeping what it committed."""


def _terminated() -> Terminated:
    return Terminated("stopped by SIGTERM; the rows committed so far are kept: rerun the same command to resume")


class _sigterm_stops:
    """SIGTERM, while a run holds its output, stops it with one line (RunStopped) instead of
    Ray's native stack dump and abort; the handler before it is put back afterwards.

    The handler raises in whatever the main thread is running, and Ray's own code swallows
    that at times (Ray Data's metadata export wraps dataclasses.asdict in `except Exception`;
    an exception raised in a __del__ is dropped): the signal is also remembered, and the run
    checks it between batches, so a SIGTERM always stops it."""

    def __init__(self):
        self.received = threading.Event()

    def __enter__(self) -> "_sigterm_stops":
        self.before = signal.getsignal(signal.SIGTERM)
        self.install()
        return self

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._stop)

    def check(self) -> None:
        """Stop here if a SIGTERM came and its exception was lost on the way."""
        if self.received.is_set():
            raise _terminated()

    def _stop(self, signum, frame) -> None:
        self.received.set()
        # The stop can land inside Ray Data's constructors: their __del__ then complains about
        # half-built objects as the process ends ("Exception ignored in ..."). It is ending.
        sys.unraisablehook = lambda unraisable: None
        raise _terminated()

    def __exit__(self, *exc) -> bool:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.before if self.before is not None else signal.SIG_DFL)
        return False


def actor_failure(exc: BaseException, output_uri: str, run_id: str) -> str:
    """One line for a failure the run cannot go on from (an actor that cannot start, an
    engine that died past run.max_actor_restarts): the stage, the root error, and the log
    file that holds the whole stack (OUT/_emodist/logs/ for a local output, else the temp
    folder), with where Ray keeps the actors' own logs."""
    import re
    import traceback

    text = "".join(traceback.format_exception(exc))
    # Ray wraps the actor's error (an ActorDiedError holds it as text): the root is the
    # last error line of the stack that is not Ray's own.
    errors = [m for m in re.finditer(r"^(?:\x1b\[\d+m)?([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)): (.+)$",
                                     text, re.M) if not m.group(1).startswith(("ray.", "SystemException"))]
    kind, what = (errors[-1].group(1), errors[-1].group(2)) if errors else (type(exc).__name__, str(exc))
    what = " ".join(what.split())[:300]
    stage = re.search(r"MapBatches\((\w+?)(?:Stage)?\)", text)  # DescribeLabelStage -> describe+label
    from_ray = any(type(e).__module__.startswith("ray.") for e in _chain(exc))
    path = log_path(output_uri, run_id)
    try:
        import ray

        ray_logs = ray._private.worker._global_node.get_logs_dir_path()
    except Exception:  # noqa: BLE001 - not known: the log file says so
        ray_logs = "unknown"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(storage.scrub(text) + f"\nRay's own logs of this run's actors: {ray_logs}\n")
        where = f"the stack is in {path}"
    except OSError as err:
        where = f"its stack could not be written to {path} ({err.strerror}); Ray's logs: {ray_logs}"
    name = "+".join(w.lower() for w in re.findall(r"[A-Z][a-z]*", stage.group(1))) if stage else ""
    head = (f"{name + ' ' if name else ''}actor failed" if from_ray
            else "the run failed (a bug: please report it with the log file)")
    return storage.scrub(f"{head}: {kind}: {what}; the run stopped (committed rows are kept; rerun the same "
                         f"command to resume); {where}")


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in out:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def _finish(summary: RunSummary, output_uri: str, t0: float, cfg: Config) -> RunSummary:
    summary.seconds = time.perf_counter() - t0
    summary.clips_per_s = summary.clips / summary.seconds if summary.seconds else 0.0
    RunFolder(output_uri, cfg).write_summary(asdict(summary))
    return summary


class _progress:
    """A rich progress bar with failures and clips/s, or nothing."""

    def __init__(self, enabled: bool, total: int | None):
        self.enabled, self.total = enabled, total

    def __enter__(self):
        if not self.enabled:
            return lambda ok, failed, skipped=0: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("labeling"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[failed]} failed"), TextColumn("{task.fields[rate]}"),
                            TimeRemainingColumn())
        task = self.bar.add_task("run", total=self.total, failed=0, rate="")
        start, state = time.perf_counter(), {"failed": 0, "done": 0, "shown": False}
        # Ray's C++ core worker writes its own lines to stderr while the stage actors start;
        # the bar appears with the first finished batch, so none of them lands on it.
        what = f"{self.total} clips" if self.total is not None else "the clips"
        self.bar.console.print(f"labeling {what}: starting the stage actors ...", highlight=False)
        self.state = state

        def advance(ok: int, failed: int, skipped: int = 0) -> None:
            """Clips labeled, failed, and skipped as already done (these move the bar
            towards its total but not the rate)."""
            if not state["shown"]:
                self.bar.start()
                state["shown"] = True
            state["failed"] += failed
            state["done"] += ok + failed
            rate = state["done"] / max(time.perf_counter() - start, 1e-9)
            self.bar.update(task, advance=ok + failed + skipped, failed=state["failed"], rate=f"{rate:.2f} clips/s")

        return advance

    def __exit__(self, *exc):
        if self.enabled and self.state["shown"]:
            self.bar.stop()
        return False
