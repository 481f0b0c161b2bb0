"""Helpers shared by the benchmark sections: timing with repetitions, one local Ray for
the whole run, a memory sampler, and the result rows and tables."""
from __future__ import annotations

import json
import os
import re
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- timing --------------------------------------------------------------------------


@dataclass
class Timing:
    """Wall and CPU seconds of each repetition; medians are what the tables show."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, wall: float, cpu: float) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)

    @property
    def wall_med(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_med(self) -> float:
        return statistics.median(self.cpu)

    @property
    def spread(self) -> float:
        """(max - min) / median of the wall times: how noisy this row was."""
        return (max(self.wall) - min(self.wall)) / self.wall_med if len(self.wall) > 1 else 0.0


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(wall s, CPU s of this process, result)."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def interleaved(cases: dict[str, Callable[[], object]], reps: int, warmup: bool = True) -> dict[str, Timing]:
    """Run every case once per repetition, in turn (so load changes hit all of them
    alike), after one untimed warm-up pass; returns each case's timings."""
    if warmup:
        for fn in cases.values():
            fn()
    out = {name: Timing() for name in cases}
    for _ in range(reps):
        for name, fn in cases.items():
            wall, cpu, _ = timed(fn)
            out[name].add(wall, cpu)
    return out


def fresh_import_s(stmt: str, reps: int) -> float:
    """Median seconds to run `stmt` in a fresh interpreter of this venv (the imports an
    actor pays when it starts), interpreter start-up excluded."""
    import subprocess

    code = f"import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"
    out = []
    for _ in range(reps):
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
        out.append(float(p.stdout.strip().splitlines()[-1]))
    return statistics.median(out)


# --- Ray -----------------------------------------------------------------------------


def init_ray(num_cpus: int) -> None:
    """One local Ray for the whole benchmark (its start-up is never timed). The repo
    root goes on the workers' PYTHONPATH so they can import benchmarks._udfs."""
    import logging

    import ray

    if ray.is_initialized():
        return
    path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
    t0 = time.perf_counter()
    # address="local": never attach to a cluster someone else started with `ray start`.
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    log(f"ray started in {time.perf_counter() - t0:.1f} s with {num_cpus} CPUs (not timed)")


def restart_ray(num_cpus: int) -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    init_ray(num_cpus)


# --- memory --------------------------------------------------------------------------


def psutil_module():
    """psutil; when it is not installed on its own, the copy Ray ships (importing ray
    puts ray/thirdparty_files on sys.path)."""
    try:
        import psutil
    except ImportError:
        import ray  # noqa: F401

        import psutil
    return psutil


class MemorySampler:
    """Samples, in a thread, the resident memory of this process (the driver) and of
    the Ray worker processes it started (descendants whose command line begins with
    `ray::`: stage actors, read tasks, idle workers). RSS counts shared pages (the
    object store's shared memory, shared libraries) in every process that maps them,
    so the sum over workers over-counts; max and sum are both reported."""

    def __init__(self, interval_s: float = 0.25):
        psutil = psutil_module()
        self.psutil = psutil
        self.proc = psutil.Process()
        self.interval_s = interval_s
        self.peak_driver = 0
        self.peak_workers_sum = 0
        self.peak_worker_max = 0
        self.peak_workers_n = 0
        self.samples = 0
        self.peak_by_role: dict[str, int] = {}  # e.g. 'ray::MapWorker(MapBatches(DecodeStage))' -> max RSS
        # RSS minus resident shared pages (the object store's shared memory a worker has
        # written or read, shared libraries): the worker's own heap.
        self.peak_private_by_role: dict[str, int] = {}
        self.peak_private_sum = 0
        self.peak_private_max = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _workers(self):
        psutil = self.psutil
        out, private = [], []
        for p in self.proc.children(recursive=True):
            try:
                cmd = p.cmdline()
                if cmd and cmd[0].startswith("ray::"):
                    mi = p.memory_info()
                    out.append(mi.rss)
                    own = mi.rss - getattr(mi, "shared", 0)
                    private.append(own)
                    role = re.sub(r"\.[A-Za-z_]\w*$", "", cmd[0].split()[0])  # drop '.submit' etc.
                    self.peak_by_role[role] = max(self.peak_by_role.get(role, 0), mi.rss)
                    self.peak_private_by_role[role] = max(self.peak_private_by_role.get(role, 0), own)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        if private:
            self.peak_private_sum = max(self.peak_private_sum, sum(private))
            self.peak_private_max = max(self.peak_private_max, max(private))
        return out

    def sample(self) -> None:
        try:
            self.peak_driver = max(self.peak_driver, self.proc.memory_info().rss)
        except self.psutil.Error:
            return
        w = self._workers()
        if w:
            self.peak_workers_sum = max(self.peak_workers_sum, sum(w))
            self.peak_worker_max = max(self.peak_worker_max, max(w))
            self.peak_workers_n = max(self.peak_workers_n, len(w))
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def result_mib(self) -> dict[str, float]:
        mib = 1 << 20
        return {"driver_peak_mib": self.peak_driver / mib, "workers_sum_peak_mib": self.peak_workers_sum / mib,
                "worker_max_peak_mib": self.peak_worker_max / mib, "workers_seen_max": self.peak_workers_n,
                "workers_private_sum_peak_mib": self.peak_private_sum / mib,
                "worker_private_max_peak_mib": self.peak_private_max / mib,
                "samples": self.samples,
                "by_role_private_peak_mib": {k: round(v / mib, 1) for k, v in sorted(
                    self.peak_private_by_role.items(), key=lambda kv: -kv[1])},
                "by_role_peak_mib": {k: round(v / mib, 1) for k, v in sorted(self.peak_by_role.items(),
                                                                          key=lambda kv: -kv[1])}}


# --- results -------------------------------------------------------------------------


@dataclass
class Row:
    """One measured case: absolute figures."""

    section: str
    clip_set: str
    case: str
    clips: int
    clips_per_s: float
    frames_per_s: float | None = None  # frames delivered (to the next stage, or the reader)
    decoded_fps: float | None = None  # frames the decoder went through per second
    cpu_s_per_clip: float | None = None  # CPU seconds of this process per clip (in-process rows)
    spread: float | None = None  # (max-min)/median of the repetitions' wall times
    reps: int = 1
    note: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class Ratio:
    name: str
    value: float | None
    target: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def row(self, section: str, clip_set: str, case: str) -> Row | None:
        for r in self.rows:
            if (r.section, r.clip_set, r.case) == (section, clip_set, case):
                return r
        return None


def _f(v, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v:  # NaN
            return "-"
        return f"{v:,.{digits}f}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _met(q: Ratio, no: str = "NO") -> str:
    return "-" if q.met is None else ("yes" if q.met else no)


def markdown(res: Results) -> str:
    lines = ["| section | clip set | case | clips | clips/s | frames/s delivered | frames/s decoded | CPU s/clip | spread | note |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in res.rows:
        lines.append(
            f"| {r.section} | {r.clip_set} | {r.case} | {r.clips} | {_f(r.clips_per_s)} | {_f(r.frames_per_s, 0)} | "
            f"{_f(r.decoded_fps, 0)} | {_f(r.cpu_s_per_clip, 4)} | {_f(r.spread)} | {r.note} |")
    lines += ["", "| ratio | value | target | met | note |", "|---|---:|---|---|---|"]
    for q in res.ratios:
        lines.append(f"| {q.name} | {_f(q.value)} | {q.target} | {_met(q, '**no**')} | {q.note} |")
    bars = target_bars(res)
    if bars:
        lines += ["", "```", bars, "```"]
    if res.notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in res.notes]
    return "\n".join(lines)


def text_table(res: Results) -> str:
    """The same tables, fixed-width for a terminal."""
    head = f"{'section':8s} {'clip set':14s} {'case':46s} {'clips':>5s} {'clips/s':>9s} {'fr/s out':>9s} {'fr/s dec':>9s} {'CPUs/clip':>9s} {'spread':>6s}"
    out = [head, "-" * len(head)]
    for r in res.rows:
        out.append(f"{r.section:8s} {r.clip_set:14s} {r.case[:46]:46s} {r.clips:5d} {_f(r.clips_per_s):>9s} "
                   f"{_f(r.frames_per_s, 0):>9s} {_f(r.decoded_fps, 0):>9s} {_f(r.cpu_s_per_clip, 4):>9s} {_f(r.spread):>6s}")
    out += ["", f"{'ratio':70s} {'value':>8s}  {'target':10s} met", "-" * 96]
    for q in res.ratios:
        out.append(f"{q.name[:70]:70s} {_f(q.value):>8s}  {q.target:10s} {_met(q)}")
    bars = target_bars(res)
    return "\n".join(out + (["", bars] if bars else []))


def _target_number(target: str) -> float | None:
    """'>= 0.8' -> 0.8; None where the target is not one number."""
    import re

    m = re.fullmatch(r"\s*(?:>=|<=|>|<|=)?\s*([0-9][0-9,]*(?:\.[0-9]+)?)\s*", target or "")
    return float(m.group(1).replace(",", "")) if m else None


def target_bars(res: Results, width: int = 40) -> str:
    """Each targeted ratio as a bar against its target ('|'), so a miss shows at a glance."""
    rows = [(q, _target_number(q.target)) for q in res.ratios if q.value is not None and q.value == q.value]
    rows = [(q, t) for q, t in rows if t]
    if not rows:
        return ""
    out = [f"targets: each bar is the value, '|' the target (bar width {width} = 1.5 x the target)"]
    for q, t in rows:
        scale = width / (1.5 * t)
        filled = min(width, round(q.value * scale))
        mark = min(width - 1, round(t * scale))
        bar = "".join("|" if i == mark else ("#" if i < filled else " ") for i in range(width))
        out.append(f"{q.name[:60]:60s} {bar} {_f(q.value):>8s} {q.target:9s} {_met(q)}")
    return "\n".join(out)


def write(res: Results, out_json: Path) -> Path:
    out_json.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": res.meta, "rows": [asdict(r) for r in res.rows],
               "ratios": [asdict(q) for q in res.ratios], "notes": res.notes}
    out_json.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    md = out_json.with_suffix(".md")
    md.write_text(f"# emodist benchmark, {res.meta.get('date', '')}\n\n{meta_text(res.meta)}\n\n{markdown(res)}\n")
    return md


def meta_text(meta: dict) -> str:
    keys = ("command", "machine", "load_before", "load_after", "python", "versions", "wall_s")
    return "\n".join(f"- {k}: {meta[k]}" for k in keys if k in meta)


def machine_info() -> dict:
    import platform

    psutil = psutil_module()
    info = {"cpus": os.cpu_count(), "mem_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(), "processor": platform.processor() or platform.machine()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import torch

        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except Exception:  # noqa: BLE001
        info["gpu"] = "unknown"
    return info


def load_avg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"
