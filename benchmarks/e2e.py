"""Section 2 (end to end against the slowest stage) and section 3 (memory at N and 10N).

Stages alone, in this process, on the same 16 clips (synthetic 224x224, 3 s), measured
before and after the pipeline runs (medians over both, so that they see the same shared
machine as the pipeline):
- decode: emodist's DecodeStage on batches of `decode.batch_size` (what one decode actor runs);
- describe + label: emodist's DescribeLabelStage (the tiny VLM, one model copy, one torch
  thread as in its actor) on batches pre-decoded by DecodeStage;
- Ray's batch -> block conversion of the decoded batches (the copy of the frames into
  Arrow that every decode batch goes through before the object store).
bound = 1 / max(decode s/clip / decode actors, model s/clip / model actors): the rate
of a pipeline limited only by its slowest stage. A second bound, CPU capacity = CPUs /
(CPU s/clip of decode + of the model), says what the shared cores can do at best.

The pipeline: `emodist.pipeline.run` with configs/tiny-vlm.yaml (decode and the shared
describe+label actor at 0.5 CPU each) on a local Ray started before (never timed), one
untimed warm-up run, then, each from a fresh output folder, with memory sampled:
- A: N clips (N_CLIPS), default config: a whole run, actor start-up and model load
  included (a new actor pool per run, as in production);
- B: N and 10N clips (a manifest listing the N clips once and 10 times, distinct clip
  ids) with Ray Data's object store budget at BUDGET_MIB: decode runs only a few
  batches ahead of the model, so both stages work at once, as in any long run once the
  budget (by default a share of the object store: GBs) has filled. 10N's rate after its
  first rows is the long-run rate, compared with the bound (full runs: the median of
  three 10N runs); memory at N and 10N (the target) comes from these runs;
- full runs also: C, N and 10N with Ray's default budget (memory then follows how far
  decode may run ahead), and D, 10N with budget and the decode settings from before the
  throughput fixes.
Rates "after the first rows": rows the driver received after its first batch / time from
the first to the last batch (emodist.pipeline.PartWriter is wrapped, in this process,
to note when each batch's rows arrive).
Memory: peak RSS of the driver and of the Ray worker processes (sum, max, and without
shared pages, i.e. without the object store's shared memory they map).
"""
from __future__ import annotations

import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from benchmarks import common
from benchmarks.clips import videos
from benchmarks.common import MemorySampler, Ratio, Results, Row, log

CONFIG = common.ROOT / "configs" / "tiny-vlm.yaml"


def _batches(paths: list[str], bs: int) -> list[dict]:
    from emodist import schema as col
    from emodist.io.rows import clip_id_for

    out = []
    for s in range(0, len(paths), bs):
        chunk = paths[s : s + bs]
        out.append({col.CLIP_ID: np.array([clip_id_for(p) for p in chunk], dtype=object),
                    col.URI: np.array(chunk, dtype=object),
                    col.REF_LABEL: np.array([""] * len(chunk), dtype=object)})
    return out


class StagesAlone:
    """The decode stage and the describe+label stage measured alone, in this process, on
    the same clips, repetitions interleaved; `measure` can be called before and after
    the pipeline runs so that both see the same (shared, changing) machine."""

    def __init__(self, paths: list[str], cfg):
        from ray.data.block import BlockAccessor

        from emodist.stages.decode import DecodeStage
        from emodist.models.engine import run_sync
        from emodist.stages.describe_label import DescribeLabelStage

        self.n = len(paths)
        self.decode = DecodeStage(cfg)
        self.raw = _batches(paths, cfg.decode.batch_size)
        decoded = [self.decode(dict(b)) for b in self.raw]  # also the warm-up
        if any((d["error_stage"] != "").any() for d in decoded):
            raise RuntimeError("decode failed on a benchmark clip")
        self.decoded = decoded
        # The model stage gets batches of labeler.batch_size rows, as Ray re-batches them.
        rows = {k: np.concatenate([d[k] for d in decoded]) for k in decoded[0]}
        bs = cfg.labeler.batch_size
        self.model_batches = [{k: v[s : s + bs] for k, v in rows.items()} for s in range(0, self.n, bs)]
        t0 = time.perf_counter()
        self.model = DescribeLabelStage(cfg)  # imports + model; sets torch threads as its actor does
        self.load_s = time.perf_counter() - t0
        self._run = run_sync
        self._run(self.model(dict(self.model_batches[0])))  # warm-up
        self._to_block = BlockAccessor.batch_to_block
        self.timings = {k: common.Timing() for k in ("decode", "model", "to_block")}

    def measure(self, reps: int) -> None:
        def run_decode():
            for b in self.raw:
                self.decode(dict(b))

        def run_model():
            for b in self.model_batches:
                self._run(self.model(dict(b)))

        def run_to_block():  # what Ray does to each batch a decode actor returns
            for d in self.decoded:
                self._to_block(dict(d))

        t = common.interleaved({"decode": run_decode, "model": run_model, "to_block": run_to_block}, reps,
                               warmup=False)
        for k, v in t.items():
            self.timings[k].wall += v.wall
            self.timings[k].cpu += v.cpu

    def result(self) -> dict:
        n, t = self.n, self.timings
        return {"decode_s": t["decode"].wall_med / n, "model_s": t["model"].wall_med / n,
                "decode_cpu_s": t["decode"].cpu_med / n, "model_cpu_s": t["model"].cpu_med / n,
                "to_block_s": t["to_block"].wall_med / n, "model_load_s": self.load_s}

    def rows(self, res: Results, set_name: str) -> dict:
        out, t, n = self.result(), self.timings, self.n
        reps = len(t["decode"].wall)
        res.rows.append(Row("e2e", set_name, "stage alone: DecodeStage (in process)", n, 1 / out["decode_s"],
                            None, None, out["decode_cpu_s"], t["decode"].spread, reps,
                            f"{out['decode_s'] * 1000:.1f} ms/clip", {"wall_s": t["decode"].wall}))
        res.rows.append(Row("e2e", set_name, "stage alone: DescribeLabelStage, tiny VLM (in process)", n,
                            1 / out["model_s"], None, None, out["model_cpu_s"], t["model"].spread, reps,
                            f"{out['model_s'] * 1000:.1f} ms/clip; construction (imports + model) {self.load_s:.1f} s",
                            {"wall_s": t["model"].wall}))
        res.rows.append(Row("e2e", set_name, "Ray batch->block conversion of decoded batches (in process)", n,
                            1 / out["to_block_s"], None, None, t["to_block"].cpu_med / n, t["to_block"].spread, reps,
                            f"{out['to_block_s'] * 1000:.2f} ms/clip: frames copied into an Arrow tensor column"))
        return out


@contextmanager
def batch_times():
    """(time, rows) each time the driver commits a finished batch: emodist.pipeline.Committer
    is swapped, for the duration, for a subclass that notes the time (no change to emodist's
    files). If the name moves this raises: a benchmark that silently measured nothing is
    what left the long-run ratio unmeasured once before."""
    from emodist import pipeline

    times: list[tuple[float, int]] = []
    orig = getattr(pipeline, "Committer", None)
    if orig is None or not hasattr(orig, "add"):
        raise RuntimeError("benchmarks/e2e.py: emodist.pipeline.Committer.add, which this benchmark times, "
                           "is gone; point batch_times at the driver's per-batch commit")

    class Recording(orig):
        def add(self, batch):
            labeled, failed = super().add(batch)
            if labeled or failed:
                times.append((time.perf_counter(), labeled + failed))
            return labeled, failed

    pipeline.Committer = Recording
    try:
        yield times
    finally:
        pipeline.Committer = orig


def pipeline_run(cfg, folder: Path) -> dict:
    from emodist import pipeline

    with tempfile.TemporaryDirectory(prefix="emodist-bench-") as tmp, MemorySampler() as mem, \
            batch_times() as times:
        t0 = time.perf_counter()
        summary = pipeline.run(cfg, str(folder), str(Path(tmp) / "out"), progress=False)
        wall = time.perf_counter() - t0
    out = {"wall_s": wall, "summary": summary, "mem": mem.result_mib(), "first_s": None, "steady": None,
           "batches": len(times)}
    if times:
        out["first_s"] = times[0][0] - t0
        if len(times) >= 5:  # clips after the first batch / time from the first to the last batch
            out["steady"] = sum(n for _, n in times[1:]) / (times[-1][0] - times[0][0])
    return out


@contextmanager
def object_store_limit(mib: float | None):
    """Ray Data's executor budget for object store memory (None: Ray's default)."""
    import ray

    ctx = ray.data.DataContext.get_current()
    before = ctx.execution_options.resource_limits
    if mib is not None:
        ctx.execution_options.resource_limits = ray.data.ExecutionResources(object_store_memory=mib * 2**20)
    try:
        yield
    finally:
        ctx.execution_options.resource_limits = before


BUDGET_MIB = 128  # Ray Data object store budget of the long runs (~77 clips of frames)
N_CLIPS = 80  # N; 10N lists the same clips 10 times under distinct ids


def repeated_manifest(folder: Path, times: int) -> Path:
    """A manifest listing every clip of `folder` `times` times under distinct clip ids."""
    import csv

    out = Path(tempfile.gettempdir()) / f"emodist-bench-{folder.name}-x{times}.csv"
    with open(out, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["uri", "clip_id", "label"])
        for k in range(times):
            for p in videos(folder):
                w.writerow([p, f"{Path(p).stem}-{k}", ""])
    return out


def run(res: Results, folder: Path, warm_folder: Path | None, set_name: str, reps: int, variants: bool = True,
        long_reps: int = 1, fresh_ray: bool = True) -> None:
    """`folder`: the N clips (N_CLIPS); `warm_folder`: clips of the untimed warm-up run
    (None: no warm-up); `fresh_ray`: restart Ray first so that memory measured here counts
    no worker of an earlier section (the smoke run, whose figures mean nothing, does not);
    `variants`: also the default object store budget at N and 10N, and the pipeline as it
    was before the throughput fixes; `long_reps`: runs of the 10N long run (its rate is
    their median, its memory their peak)."""
    from emodist.config import load_config

    cfg = load_config(CONFIG, [])
    n = len(videos(folder))
    alone = StagesAlone(videos(folder)[:16], cfg)
    alone.measure(max(1, (reps + 1) // 2))
    if fresh_ray:
        common.restart_ray(res.meta["ray_cpus"])  # fresh workers: memory from earlier sections does not count
    imp = common.fresh_import_s(
        "import emodist.stages.describe_label, emodist.models.hf_engine, torch, transformers; "
        "from transformers import AutoModelForImageTextToText, AutoProcessor", 1)

    if warm_folder is not None:
        log("e2e: warm-up run (untimed)")
        pipeline_run(cfg, warm_folder)
    # A: the default config on N clips: a whole run, actor start-up and model load included
    # (a new actor pool per run, as in production). Decode is faster than the model stage
    # and starts seconds earlier, so in a run this short it decodes everything while the
    # model actor starts; the frames wait in the object store.
    whole = pipeline_run(cfg, folder)
    _check(whole, n)
    log(f"e2e: {n} clips, default config: {n / whole['wall_s']:.2f} clips/s, first rows after {_s(whole['first_s'])}")
    # B: N and 10N clips with Ray Data's object store budget at BUDGET_MIB: decode runs only
    # a few batches ahead, so both stages work at once, as in any long run once the budget
    # (by default a share of the object store: GBs) has filled. 10N's rate after its first
    # rows is the long-run rate; memory at N and 10N comes from these runs.
    inputs = {n: repeated_manifest(folder, 1), 10 * n: repeated_manifest(folder, 10)}
    bounded: dict[int, list[dict]] = {n: [], 10 * n: []}
    for k, path in [(n, inputs[n])] + [(10 * n, inputs[10 * n])] * long_reps:
        with object_store_limit(BUDGET_MIB):
            r = pipeline_run(cfg, path)
        _check(r, k)
        bounded[k].append(r)
        log(f"e2e: {k} clips, object store budget {BUDGET_MIB} MiB: {k / r['wall_s']:.2f} clips/s, steady "
            f"{r['steady'] or float('nan'):.1f} clips/s; peak RSS driver {r['mem']['driver_peak_mib']:.0f} MiB, "
            f"largest worker {r['mem']['worker_max_peak_mib']:.0f} MiB")
    unbounded, before = {}, None
    if variants:
        for k, path in inputs.items():  # C: Ray's default budget
            unbounded[k] = r = pipeline_run(cfg, path)
            _check(r, k)
            log(f"e2e: {k} clips, default budget: steady {r['steady'] or float('nan'):.1f} clips/s; largest worker "
                f"{r['mem']['worker_max_peak_mib']:.0f} MiB")
        # D: 10N with budget, the decode settings before the fixes (batches of 4, FFmpeg's
        # own thread count, every frame decoded, the listing 2 blocks ahead).
        from benchmarks.decode import BEFORE_SETTINGS, listing_ahead

        try:
            with object_store_limit(BUDGET_MIB), listing_ahead(2):
                before = pipeline_run(load_config(CONFIG, BEFORE_SETTINGS), inputs[10 * n])
            _check(before, 10 * n)
        except Exception as exc:  # noqa: BLE001 - a variant must not cost the run
            res.notes.append(f"e2e 'before the fixes' run failed: {type(exc).__name__}: {str(exc)[:300]}")
            before = None
    alone.measure(max(1, reps // 2 + 1))  # the stages alone again, after the pipeline runs
    a = alone.rows(res, set_name)

    model_actors = cfg.labeler.actors if cfg.shares_model else min(cfg.describer.actors, cfg.labeler.actors)
    per_stage = {"decode": a["decode_s"] / cfg.decode.actors, "describe+label": a["model_s"] / model_actors}
    bound = 1 / max(per_stage.values())
    cpu_bound = res.meta["ray_cpus"] / (a["decode_cpu_s"] + a["model_cpu_s"])
    res.rows.append(Row("e2e", set_name, "bound: 1 / slowest stage (actors: decode "
                        f"{cfg.decode.actors}, model {model_actors})", 0, bound,
                        note=f"slowest: {max(per_stage, key=per_stage.get)}"))
    res.rows.append(Row("e2e", set_name, f"bound: CPU capacity ({res.meta['ray_cpus']} CPUs / CPU s per clip)", 0,
                        cpu_bound, note="both stages' CPU time on the machine's cores"))
    res.rows.append(Row("e2e", set_name, "import describe stage + torch + transformers in a fresh Python", 1, 1 / imp,
                        note=f"{imp:.2f} s: paid by every model actor at start (the tiny model itself loads in ~0.3 s)"))
    res.rows.append(_run_row(set_name, f"pipeline.run, tiny VLM, {n} clips, default config", [whole], n))
    for k, rs in bounded.items():
        res.rows.append(_run_row(set_name, f"pipeline.run, {k} clips, object store budget {BUDGET_MIB} MiB", rs, k))
    for k, r in unbounded.items():
        res.rows.append(_run_row(set_name, f"pipeline.run, {k} clips, Ray's default object store budget", [r], k))
    if before is not None:
        res.rows.append(_run_row(set_name, f"pipeline.run, {10 * n} clips, budget {BUDGET_MIB} MiB, decode as before "
                                 "the fixes", [before], 10 * n))
    long_runs = bounded[10 * n]
    steady = _median([r["steady"] for r in long_runs])
    whole_long = 10 * n / float(np.median([r["wall_s"] for r in long_runs]))
    first = _median([r["first_s"] for r in long_runs])
    res.ratios.append(Ratio(f"[{set_name}] e2e long-run rate ({10 * n} clips, after the first rows) / bound "
                            "(slowest stage alone)", steady / bound, ">= 0.8", steady / bound >= 0.8,
                            f"budget {BUDGET_MIB} MiB; start-up excluded; median of {len(long_runs)} runs"))
    res.ratios.append(Ratio(f"[{set_name}] e2e whole run ({10 * n} clips) / bound", whole_long / bound,
                            "", None, f"start-up included: first rows after {first:.1f} s"))
    res.ratios.append(Ratio(f"[{set_name}] e2e whole run ({n} clips, default config) / bound", n / whole["wall_s"] / bound,
                            "", None, "mostly start-up: actor start, torch import, model load"))
    res.ratios.append(Ratio(f"[{set_name}] e2e long-run rate / CPU-capacity bound", steady / cpu_bound, "", None,
                            f"{res.meta['ray_cpus']} CPUs"))
    if before is not None and before["steady"]:
        res.ratios.append(Ratio(f"[{set_name}] e2e long-run rate / the same with decode as before the fixes",
                                steady / before["steady"], "", None, "same clips, same run"))

    # Section 3: memory at N and 10N.
    peaks = {k: _mem_peaks([r["mem"] for r in rs]) for k, rs in bounded.items()}
    pairs = [(f"budget {BUDGET_MIB} MiB", peaks, True)] + ([("Ray's default budget", {
        k: r["mem"] for k, r in unbounded.items()}, False)] if unbounded else [])
    for label, mems, targeted in pairs:
        for k, m in mems.items():
            stages = {_stage_name(k_): v for k_, v in m["by_role_peak_mib"].items() if k_.startswith("ray::MapWorker")}
            own = {_stage_name(k_): v for k_, v in m["by_role_private_peak_mib"].items()
                   if k_.startswith("ray::MapWorker")}
            res.rows.append(Row("memory", set_name, f"peak RSS during pipeline.run, {k} clips, {label}", k, None,
                                note=(f"driver {m['driver_peak_mib']:.0f} MiB; workers sum {m['workers_sum_peak_mib']:.0f} "
                                      f"MiB, max {m['worker_max_peak_mib']:.0f} MiB over {m['workers_seen_max']:.0f} "
                                      f"ray:: processes; stage actors RSS {_mib(stages)}; without shared pages "
                                      f"{_mib(own)}"), extra=m))
        ms, mb = mems[n], mems[10 * n]
        for key, what in (("driver_peak_mib", "driver RSS"), ("workers_sum_peak_mib", "workers RSS (sum)"),
                          ("worker_max_peak_mib", "largest worker RSS"),
                          ("workers_private_sum_peak_mib", "workers RSS minus shared pages (sum)"),
                          ("worker_private_max_peak_mib", "largest worker RSS minus shared pages")):
            q = mb[key] / ms[key] if ms[key] else float("nan")
            res.ratios.append(Ratio(f"[{set_name}] memory {what}, {label}: peak at {10 * n} / at {n} clips", q,
                                    "<= 1.10" if targeted else "", q <= 1.10 if targeted else None,
                                    f"{ms[key]:.0f} -> {mb[key]:.0f} MiB"))


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s"


def _stage_name(role: str) -> str:
    return role.removeprefix("ray::MapWorker(MapBatches(").removesuffix("))")


def _check(r: dict, n: int) -> None:
    s = r["summary"]
    if s.labeled != n:
        raise RuntimeError(f"pipeline labeled {s.labeled} of {n} clips ({s.failures_by_stage})")


def _median(values) -> float:
    v = [x for x in values if x]
    return float(np.median(v)) if v else float("nan")


def _run_row(set_name: str, case: str, rs: list[dict], n: int) -> Row:
    wall = float(np.median([r["wall_s"] for r in rs]))
    s = rs[-1]["summary"]
    busy = {k: round(v / n * 1000, 1) for k, v in s.stage_seconds.items() if v}
    first = [r["first_s"] for r in rs if r["first_s"] is not None]
    steady = _median([r["steady"] for r in rs])
    return Row("e2e", set_name, case, n, n / wall, spread=_spread([r["wall_s"] for r in rs]), reps=len(rs),
               note=(f"{wall:.1f} s; first rows after {np.median(first) if first else float('nan'):.1f} s; "
                     f"after them {steady:.1f} clips/s; busy ms/clip in the actors {busy}"),
               extra={"wall_s": [r["wall_s"] for r in rs], "first_rows_s": first, "steady": [r["steady"] for r in rs],
                      "stage_seconds": s.stage_seconds})


def _mib(d: dict) -> str:
    return ", ".join(f"{k} {v:.0f}" for k, v in d.items()) or "-"


def _mem_peaks(samples: list[dict]) -> dict:
    """The peaks over several runs' memory samples."""
    out = {k: float(max(s[k] for s in samples)) for k in samples[0] if not k.startswith("by_role")}
    for key in ("by_role_peak_mib", "by_role_private_peak_mib"):
        roles: dict[str, float] = {}
        for s in samples:
            for k, v in s[key].items():
                roles[k] = max(roles.get(k, 0.0), v)
        out[key] = dict(sorted(roles.items(), key=lambda kv: -kv[1]))
    return out


def _spread(walls: list[float]) -> float:
    return (max(walls) - min(walls)) / float(np.median(walls)) if len(walls) > 1 else 0.0
