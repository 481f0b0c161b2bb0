"""The model stage against a modelled GPU engine: does the stage keep the engine fed?

MODELLED, not measured on a GPU. The engine is a simulation that runs in real time
(sleeps, scaled by --scale) and stands in for vLLM serving Qwen2.5-VL-7B on one GPU:
- a front-end thread (vLLM's multimodal preprocessing runs on one worker thread):
  `frontend_ms_per_image` per image plus `frontend_ms_per_request`, request by request;
- a core with continuous batching: each step takes `step_ms + ms_per_token x tokens`,
  where tokens are the prefill tokens admitted this step (chunked, at most
  `max_batched_tokens`) plus one per decoding sequence, plus `vision_ms_per_image` for
  each image whose prompt starts prefill; at most `max_num_seqs` sequences run at once.
The parameters per GPU are assumptions (printed with the results), derived from
datasheet bandwidth and FLOPs, not measured.

Driven by the real stage code on synthetic decoded batches (the stage sees small
frames; the engine charges for `image_px` images):
- today's: the synchronous stage of the commit before the engine seam (run from a git
  worktree of it), one batch at a time per actor (as Ray runs a synchronous actor):
  describe every gap of the batch, then label every clip, then return; its engine is
  the offline `vllm.LLM`, whose generate() preprocesses all of a call's prompts in the
  calling thread before running them (modelled so);
- the new one: DescribeLabelStage over the engine protocol, `batches_in_flight` batches
  at once (as Ray runs an async actor), each clip labeled as soon as its gaps are
  described;
- the engine's own bound: the same requests all submitted at once (fed ahead).
Reported: clips/s, engine-core busy fraction, and each as a ratio to the bound.

The front-end against the GPU (`frontend_rows`, MODELLED): can vLLM's one preprocessing
thread per engine feed the GPU? At 224 and 448 px, the GPU's image rate is the modelled
core's, fed ahead, on MSCE's requests (11 frames a 3 s clip); the front-end's is 1000 /
(measured ms per image + the request's share of `frontend_ms_per_request`) per engine,
times `engines_per_gpu`. Printed as the ratio front-end / GPU for: the figure this
benchmark used to assume (transformers' PIL backend, normalize on the CPU), vLLM's own
path with frames as PIL images (emodist before), and as uint8 arrays (now), and the old
figure with 2 engines per GPU. Target: the shipped path >= 2 (its thread at most half
busy: it shares the actor's GIL and cores with the engine client and the stage).

    python -m benchmarks --sections model          # within the benchmark run
    python -m benchmarks.model_stage --json out.json [--before /tmp/emodist-before]
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import queue
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

DESCRIPTION = "the mouth corners rise and the brows lift slightly"


# The front-end's CPU cost per image, 4 frames a request (one request's keyframes),
# measured with benchmarks/frontend_cost.py on 2026-12-04 (thread CPU time, shared
# 2-core machine), {px: ms}:
# - BEFORE: transformers' Qwen2-VL processor, PIL backend, normalize on the CPU (main
#   venv, `python benchmarks/frontend_cost.py`): what this benchmark assumed until then.
#   vLLM runs this only where torchvision is missing or its GPU normalize is off.
# - VLLM_PIL / VLLM_ARRAYS: vLLM 0.32's own preprocessing call as its one thread runs it
#   (`.venv-vllm/bin/python benchmarks/frontend_cost.py`): torchvision backend, pixels
#   normalized on the GPU (mm_device_do_normalize, vLLM's default for Qwen2.5-VL), frames
#   as PIL images (emodist before) and as uint8 arrays (now). Medians of 10 requests;
#   the spread at 448 px was 2.3-4.0 (PIL) and 1.85-2.1 (arrays).
FRONTEND_MS_BEFORE = {224: 2.1, 448: 7.0}
FRONTEND_MS_VLLM_PIL = {224: 1.2, 448: 2.6}
FRONTEND_MS_VLLM_ARRAYS = {224: 1.0, 448: 1.95}
# The stage rows below: the shipped path, and the old figure as the slow case.
FRONTEND_MS_PER_IMAGE = FRONTEND_MS_VLLM_ARRAYS[448]
FRONTEND_MS_SLOW = FRONTEND_MS_BEFORE[448]
# The shipped path's front-end must have this much headroom over the GPU's image rate.
FRONTEND_TARGET = 2.0


@dataclass(frozen=True)
class GpuModel:
    """Assumed costs of Qwen2.5-VL-7B in bf16 under vLLM on one GPU (see module doc)."""

    name: str
    step_ms: float  # per engine step: weights read once (~15 GB) + launch overhead
    ms_per_token: float  # per token in a step (~14 GFLOP per token at the effective FLOP rate)
    vision_ms_per_image: float  # ViT over one 448 px image (1024 patches, ~1.4 TFLOP)
    max_num_seqs: int = 256
    max_batched_tokens: int = 8192


GPUS = {
    # 3.35 TB/s -> ~4.5 ms per weight pass, +1.5 ms overhead; ~300 TFLOP/s effective bf16
    "H100": GpuModel("H100 (modelled)", step_ms=6.0, ms_per_token=0.05, vision_ms_per_image=4.0),
    # 0.86 TB/s -> ~17 ms per weight pass; ~160 TFLOP/s effective bf16
    "L40S": GpuModel("L40S (modelled)", step_ms=18.0, ms_per_token=0.09, vision_ms_per_image=9.0),
}
# The front-end rows also ask of a GPU twice as fast as the H100 above (~600 TFLOP/s
# effective bf16, ~60% of an H100's dense peak; or an H200/B200-class part): the upper end
# of what one engine's thread may have to feed.
FRONTEND_GPUS = {**GPUS, "H100x2": GpuModel("H100 at 2x the FLOP rate (modelled)", step_ms=6.0,
                                            ms_per_token=0.025, vision_ms_per_image=2.0)}


@dataclass(frozen=True)
class Workload:
    clips: int = 192
    duration_s: float = 3.0  # DFEW's clips: ~3 s -> 3 keyframes, 2 gaps of 4 in-between frames
    image_tokens: int = 256  # one 448 px frame after Qwen's 2x2 merge
    text_tokens_describe: int = 45
    text_tokens_label: int = 90  # + ~20 per keyframe line and description
    new_tokens_describe: int = 24
    batch_size: int = 32
    batches_in_flight: int = 4
    frontend_ms_per_request: float = 0.5


class ModelledEngine:
    """The simulated engine; `submit` takes one request and returns a future."""

    def __init__(self, gpu: GpuModel, work: Workload, frontend_ms_per_image: float, scale: float):
        self.gpu, self.work, self.scale = gpu, work, scale
        self.frontend_ms_per_image = frontend_ms_per_image
        self.busy_s = 0.0
        self._front: queue.Queue = queue.Queue()
        self._waiting: queue.Queue = queue.Queue()
        self._stop = False
        self._threads = [threading.Thread(target=self._frontend, daemon=True),
                         threading.Thread(target=self._core, daemon=True)]
        for t in self._threads:
            t.start()

    def submit(self, n_images: int, prompt_tokens: int, new_tokens: int, result,
               preprocessed: bool = False) -> concurrent.futures.Future:
        """One request; `preprocessed`: its front-end work was already paid by the caller."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        (self._waiting if preprocessed else self._front).put((n_images, prompt_tokens, new_tokens, result, fut))
        return fut

    def close(self) -> None:
        self._stop = True
        self._front.put(None)

    def _frontend(self) -> None:
        while True:
            item = self._front.get()
            if item is None:
                return
            n_images = item[0]
            time.sleep(self.scale * (self.frontend_ms_per_image * n_images + self.work.frontend_ms_per_request) / 1e3)
            self._waiting.put(item)

    def _core(self) -> None:
        g = self.gpu
        running: list[_Seq] = []
        while not self._stop:
            while len(running) < g.max_num_seqs:
                try:
                    n_images, prompt, new, result, fut = self._waiting.get(timeout=0 if running else 0.002)
                except queue.Empty:
                    break
                running.append(_Seq(prompt, new, n_images, result, fut))
            if not running:
                continue
            decoding = [s for s in running if s.prefill == 0]  # vLLM V1 schedules these first
            tokens, vision, finishing = len(decoding), 0, []
            budget = g.max_batched_tokens - tokens
            for s in running:
                if s.prefill > 0 and budget > 0:
                    if not s.started:
                        vision, s.started = vision + s.images, True
                    chunk = min(s.prefill, budget)
                    s.prefill, tokens, budget = s.prefill - chunk, tokens + chunk, budget - chunk
                    if s.prefill == 0:
                        finishing.append(s)  # its first new token comes with its last chunk
            step = (g.step_ms + g.ms_per_token * tokens + g.vision_ms_per_image * vision) / 1e3 * self.scale
            time.sleep(step)
            self.busy_s += step
            for s in decoding + finishing:
                s.new -= 1
            for s in running:
                if s.prefill == 0 and s.new <= 0:
                    s.fut.set_result(s.result)
            running = [s for s in running if not (s.prefill == 0 and s.new <= 0)]


@dataclass
class _Seq:
    prefill: int  # prompt tokens not yet prefilled
    new: int  # tokens still to generate
    images: int
    result: object
    fut: concurrent.futures.Future
    started: bool = False


def label_tokens(work: Workload, n_keyframes: int, n_desc: int) -> int:
    return work.text_tokens_label + 20 * (n_keyframes + n_desc) + work.image_tokens * n_keyframes


def describe_tokens(work: Workload, n_images: int) -> int:
    return work.text_tokens_describe + work.image_tokens * n_images


class _Base:
    model_id = "modelled-qwen2.5-vl-7b"

    def __init__(self, engine: ModelledEngine, tokenizer, work: Workload):
        self.sim, self.tokenizer, self.work = engine, tokenizer, work

    @staticmethod
    def _count(parts, text: str) -> int:
        return sum(1 for p in parts if p.get("type") == "text" and text in p.get("text", ""))

    def _logprobs(self, n: int, ids) -> np.ndarray:
        return np.log(np.full((n, len(ids)), 1.0 / len(ids)))


class AsyncFacade(_Base):
    """The engine protocol of today's code (emodist.models.engine.Engine)."""

    async def generate(self, prompts, max_new_tokens):
        futs = [self.sim.submit(len(p.images), describe_tokens(self.work, len(p.images)),
                                self.work.new_tokens_describe, DESCRIPTION) for p in prompts]
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futs)))

    async def token_logprobs(self, prompts, token_ids):
        futs = [self.sim.submit(len(p.images), label_tokens(self.work, len(p.images), self._count(p.parts, "From ")),
                                1, None) for p in prompts]
        await asyncio.gather(*(asyncio.wrap_future(f) for f in futs))
        return self._logprobs(len(prompts), token_ids)

    def close(self):
        pass


class SyncFacade(_Base):
    """The engine interface of the commit before the engine seam: blocking calls on the
    offline `vllm.LLM`, whose generate() preprocesses every prompt of the call in the
    calling thread (adding the requests) before it runs the engine: the front-end and
    the core take turns instead of overlapping."""

    def _preprocess(self, images) -> None:
        ms = sum(self.sim.frontend_ms_per_image * len(i) + self.work.frontend_ms_per_request for i in images)
        time.sleep(self.sim.scale * ms / 1e3)

    def generate(self, parts, images, max_new_tokens):
        self._preprocess(images)
        futs = [self.sim.submit(len(i), describe_tokens(self.work, len(i)), self.work.new_tokens_describe,
                                DESCRIPTION, preprocessed=True) for i in images]
        return [f.result() for f in futs]

    def token_logprobs(self, parts, images, token_ids):
        self._preprocess(images)
        futs = [self.sim.submit(len(i), label_tokens(self.work, len(i), self._count(p, "From ")), 1, None,
                                preprocessed=True) for p, i in zip(parts, images)]
        for f in futs:
            f.result()
        return self._logprobs(len(parts), token_ids)


def batches(cfg, work: Workload) -> list[dict]:
    """Synthetic decode-stage output: the msce plan's frames (small; the engine charges
    for full-size images) for `work.clips` clips."""
    from emodist import schema as col
    from emodist.plan import make_plan

    plan = make_plan("msce", cfg.plan, work.duration_s, 25.0)
    out = []
    for s in range(0, work.clips, work.batch_size):
        n = min(work.batch_size, work.clips - s)
        frames = np.empty(n, dtype=object)
        ts, gap = np.empty(n, dtype=object), np.empty(n, dtype=object)
        for i in range(n):
            frames[i] = np.zeros((len(plan.ts_s), 8, 8, 3), np.uint8)
            ts[i], gap[i] = plan.ts_s, plan.gap
        out.append({col.CLIP_ID: np.array([f"c{s + i}" for i in range(n)], dtype=object),
                    col.URI: np.array([f"/clips/c{s + i}.mp4" for i in range(n)], dtype=object),
                    col.FRAMES: frames, col.FRAME_TS: ts, col.FRAME_GAP: gap,
                    col.ERROR_STAGE: np.full(n, "", dtype=object)})
    return out


def _tokenizer():
    from transformers import AutoTokenizer

    from emodist.models.tiny import ensure_tiny_vlm

    return AutoTokenizer.from_pretrained(str(ensure_tiny_vlm()))


def _config(work: Workload):
    from emodist.config import load_config

    from emodist.config import LabelerConfig

    sets = ["describer.backend=vllm", "labeler.backend=vllm", "describer.model=m", "labeler.model=m",
            f"labeler.batch_size={work.batch_size}", "describer.max_new_tokens=32"]
    if "batches_in_flight" in LabelerConfig.model_fields:  # not in the commit before the seam
        sets.append(f"labeler.batches_in_flight={work.batches_in_flight}")
    return load_config(None, sets)


def run_new(gpu: GpuModel, work: Workload, frontend_ms: float, scale: float) -> dict:
    from emodist.models.registry import Models, engine_key
    from emodist.stages.describe_label import DescribeLabelStage

    cfg = _config(work)
    sim = ModelledEngine(gpu, work, frontend_ms, scale)
    models = Models(cfg)
    models.engines[engine_key(cfg.labeler)] = AsyncFacade(sim, _tokenizer(), work)
    stage = DescribeLabelStage(cfg, models=models)
    data = batches(cfg, work)

    async def main():
        sem = asyncio.Semaphore(work.batches_in_flight)  # Ray: max_concurrent_calls_per_actor

        async def one(b):
            async with sem:
                return await stage(b)

        return await asyncio.gather(*(one(b) for b in data))

    t0 = time.perf_counter()
    outs = asyncio.run(main())
    return _result(sim, outs, time.perf_counter() - t0, work)


def run_before(gpu: GpuModel, work: Workload, frontend_ms: float, scale: float) -> dict:
    """Today's synchronous stage (the emodist on sys.path must be the commit before the seam)."""
    from emodist.models.vllm_backend import VLLMDescriber, VLLMLabeler
    from emodist.stages.describe import DescribeStage
    from emodist.stages.label import LabelStage

    cfg = _config(work)
    sim = ModelledEngine(gpu, work, frontend_ms, scale)
    eng = SyncFacade(sim, _tokenizer(), work)
    describe = DescribeStage(cfg, describer=VLLMDescriber(cfg.describer, engine=eng))
    label = LabelStage(cfg, labeler=VLLMLabeler(cfg.labeler, cfg.mode, cfg.label_names, cfg.run.seed, engine=eng))
    data = batches(cfg, work)
    t0 = time.perf_counter()
    outs = [label(describe(b)) for b in data]  # one batch at a time, as Ray runs a sync actor
    return _result(sim, outs, time.perf_counter() - t0, work)


def run_bound(gpu: GpuModel, work: Workload, frontend_ms: float, scale: float) -> dict:
    """The engine's own bound: its core fed ahead (every clip's requests submitted at
    once, no front-end cost), or its front-end thread's rate, whichever is lower."""
    from emodist.config import load_config
    from emodist.plan import make_plan

    plan = make_plan("msce", load_config().plan, work.duration_s, 25.0)
    n_kf, n_gaps = int((plan.gap == -1).sum()), plan.n_gaps
    per_gap = int((plan.gap == 0).sum())
    sim = ModelledEngine(gpu, work, 0.0, scale)
    t0 = time.perf_counter()
    futs = []
    for _ in range(work.clips):
        futs += [sim.submit(per_gap, describe_tokens(work, per_gap), work.new_tokens_describe, None)
                 for _ in range(n_gaps)]
        futs.append(sim.submit(n_kf, label_tokens(work, n_kf, n_gaps), 1, None))
    for f in futs:
        f.result()
    core = _result(sim, None, time.perf_counter() - t0, work)
    images = n_gaps * per_gap + n_kf
    frontend_s = scale * (frontend_ms * images + work.frontend_ms_per_request * (n_gaps + 1)) / 1e3
    core["core_clips_per_s"] = core["clips_per_s"]
    core["frontend_clips_per_s"] = 1.0 / frontend_s if frontend_s else float("inf")
    core["clips_per_s"] = min(core["core_clips_per_s"], core["frontend_clips_per_s"])
    return core


def _result(sim: ModelledEngine, outs, wall: float, work: Workload) -> dict:
    sim.close()
    if outs is not None:
        failed = sum(int((o["error_stage"] != "").sum()) for o in outs)
        if failed:
            raise RuntimeError(f"{failed} clips failed in the modelled run; see the stage's log")
    return {"clips": work.clips, "wall_s": wall, "clips_per_s": work.clips / wall, "busy": sim.busy_s / wall}


CASES = {"before": run_before, "new": run_new, "bound": run_bound}


# The last commit with the synchronous model stage (before the engine seam).
BEFORE_COMMIT = "c921ee4"


def _subprocess(case: str, gpu: str, frontend_ms: float, scale: float, clips: int, before: Path | None) -> dict:
    """One case in a fresh interpreter: the new stage from this checkout, today's from a
    worktree of BEFORE_COMMIT (its own emodist first on the path)."""
    import os
    import subprocess

    from benchmarks.common import ROOT

    args = [sys.executable, str(ROOT / "benchmarks" / "model_stage.py"), "--case", case, "--gpu", gpu,
            "--frontend-ms", str(frontend_ms), "--scale", str(scale), "--clips", str(clips)]
    env = dict(os.environ, PYTHONPATH=str(before if case == "before" else ROOT))
    out = subprocess.run(args, capture_output=True, text=True, env=env, cwd=str(before if case == "before" else ROOT))
    if out.returncode != 0:
        raise RuntimeError(f"model stage case {case} failed: {out.stderr[-1500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def before_worktree() -> Path | None:
    """A worktree of BEFORE_COMMIT under the cache (made once), or None without git history."""
    import subprocess

    from benchmarks.common import ROOT

    path = Path.home() / ".cache" / "emodist" / f"before-{BEFORE_COMMIT}"
    if (path / "emodist").exists():
        return path
    res = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), BEFORE_COMMIT],
                         capture_output=True, text=True)
    return path if res.returncode == 0 else None


def run(res, quick: bool = False, smoke: bool = False) -> None:
    """The section of `python -m benchmarks`: every GPU model x front-end cost, the three
    cases side by side (each in its own process), ratios to the engine's bound. `smoke`:
    8 clips, one GPU model and one front-end cost (the test suite's smoke run)."""
    from benchmarks.common import Ratio, Row, log

    scale, clips = 0.25, (8 if smoke else 96 if quick else Workload.clips)
    work = Workload(clips=clips)
    before = before_worktree()
    res.meta["model_stage_assumptions"] = assumptions(work, scale)
    if before is None:
        res.notes.append(f"model stage: no worktree of {BEFORE_COMMIT} (no git history): today's stage not run")
    log(f"model stage: front-end {FRONTEND_MS_PER_IMAGE:g} ms per 448 px image (measured: benchmarks/frontend_cost.py)")
    res.meta["frontend_ms_per_image_measured"] = FRONTEND_MS_PER_IMAGE
    frontend_rows(res, scale, clips, smoke=smoke)
    for gpu in list(GPUS)[:1] if smoke else GPUS:
        for fe in (FRONTEND_MS_PER_IMAGE,) if smoke else (FRONTEND_MS_PER_IMAGE, FRONTEND_MS_SLOW):
            name = f"{gpu} modelled, front-end {fe:g} ms/image"
            out = {}
            for case in ("bound", "new", "before"):
                if case == "before" and before is None:
                    continue
                log(f"model stage: {name}: {case}")
                out[case] = _subprocess(case, gpu, fe, scale, clips, before)
                label = {"bound": "the engine's own bound (fed ahead)", "new": "DescribeLabelStage (async, per clip)",
                         "before": f"synchronous stage ({BEFORE_COMMIT})"}[case]
                res.rows.append(Row("model", name, label, clips, out[case]["clips_per_s"] * scale,
                                    note=f"engine busy {out[case]['busy']:.2f}", extra=out[case]))
            bound = out["bound"]["clips_per_s"]
            for case in ("new", "before"):
                if case in out:
                    ratio = out[case]["clips_per_s"] / bound
                    res.ratios.append(Ratio(f"[{name}] {case} stage / engine bound", ratio,
                                            ">= 0.9" if case == "new" else "", ratio >= 0.9 if case == "new" else None,
                                            f"engine busy {out[case]['busy']:.2f} (bound run {out['bound']['busy']:.2f})"))


def at_size(gpu: GpuModel, work: Workload, px: int) -> tuple[GpuModel, Workload]:
    """The GPU and workload for frames of px x px: Qwen's 28 px grid gives (px/28)^2
    tokens a frame, and the vision tower's cost follows its patches (window attention)."""
    from dataclasses import replace

    return (replace(gpu, vision_ms_per_image=gpu.vision_ms_per_image * (px / 448) ** 2),
            replace(work, image_tokens=(px // 28) ** 2))


def msce_requests(work: Workload) -> tuple[int, int]:
    """(images, requests) of one clip of `work.duration_s` under the msce plan."""
    from emodist.config import load_config
    from emodist.plan import make_plan

    plan = make_plan("msce", load_config().plan, work.duration_s, 25.0)
    return int((plan.gap == -1).sum()) + plan.n_gaps * int((plan.gap == 0).sum()), plan.n_gaps + 1


FRONTEND_CASES = (  # (label, {px: ms per image}, engines per GPU, the target row)
    ("old figure (PIL backend)", FRONTEND_MS_BEFORE, 1, False),  # normalize on the CPU: the old assumption
    ("vLLM, PIL images (before)", FRONTEND_MS_VLLM_PIL, 1, False),
    ("vLLM, uint8 arrays (now)", FRONTEND_MS_VLLM_ARRAYS, 1, True),
    ("old figure, 2 engines/GPU", FRONTEND_MS_BEFORE, 2, False),
)


def frontend_rows(res, scale: float, clips: int, smoke: bool = False) -> dict:
    """MODELLED: each GPU's image rate (its core fed ahead, at 224 and 448 px) against the
    front-end's, per FRONTEND_CASES; a ratio row each, the shipped case with its target."""
    from benchmarks.common import Ratio, Row, log

    work = Workload(clips=clips)
    images, requests = msce_requests(work)
    out = {}
    res.meta["frontend_assumptions"] = {
        "MODELLED": "GPU image rates from the modelled core (assumptions: GPUS); front-end ms per image measured "
                    "on CPU (benchmarks/frontend_cost.py); engines sharing a GPU assumed to lose no GPU time",
        "images_per_clip": images, "requests_per_clip": requests,
        "frontend_ms_per_request": work.frontend_ms_per_request,
        "gpus": {k: asdict(v) for k, v in FRONTEND_GPUS.items()},
        "ms_per_image": {c[0]: c[1] for c in FRONTEND_CASES}}
    log(f"front-end vs GPU (MODELLED): {images} frames and {requests} requests a clip; front-end ms per image "
        + "; ".join(f"{c[0]}: {c[1]}" for c in FRONTEND_CASES[:3]))
    for gpu_key in ("H100x2",) if smoke else FRONTEND_GPUS:
        for px in (448,) if smoke else (224, 448):
            gpu, w = at_size(FRONTEND_GPUS[gpu_key], work, px)
            log(f"front-end vs GPU: {gpu.name}, {px} px: the core fed ahead")
            core = run_bound(gpu, w, 0.0, scale)
            gpu_images_s = core["core_clips_per_s"] * scale * images
            name = f"MODELLED {gpu_key} {px}px"
            res.rows.append(Row("model", name, f"GPU image rate, {gpu.name}, core fed ahead", clips,
                                core["core_clips_per_s"] * scale, note=f"{gpu_images_s:.0f} images/s",
                                extra={"images_per_s": gpu_images_s, "busy": core["busy"]}))
            for label, ms, engines, target in FRONTEND_CASES:
                per_image = ms[px] + work.frontend_ms_per_request * requests / images
                fe_images_s = engines * 1000.0 / per_image
                ratio = fe_images_s / gpu_images_s
                out[(gpu_key, px, label)] = ratio
                res.ratios.append(Ratio(
                    f"[{name}] front-end/GPU images: {label}", ratio,
                    f">= {FRONTEND_TARGET:g}" if target else "", ratio >= FRONTEND_TARGET if target else None,
                    f"{fe_images_s:.0f} vs {gpu_images_s:.0f} images/s ({ms[px]:g} ms an image, {engines} engine(s) "
                    "per GPU)"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=sorted(CASES), help="run one case and print its JSON (used in subprocesses)")
    ap.add_argument("--gpu", choices=sorted(GPUS), default="H100")
    ap.add_argument("--frontend-ms", type=float, default=FRONTEND_MS_PER_IMAGE, help="front-end ms per image (default: measured)")
    ap.add_argument("--scale", type=float, default=0.25, help="simulated seconds per modelled second")
    ap.add_argument("--clips", type=int, default=Workload.clips)
    ap.add_argument("--frontend", action="store_true",
                    help="only the front-end vs GPU rows (MODELLED); exit 1 if the shipped path misses its target")
    args = ap.parse_args(argv)
    if args.frontend:
        return frontend_main(args.scale, args.clips)
    if not args.case:
        ap.error("give --case or --frontend (the whole section runs in `python -m benchmarks --sections model`)")
    work = Workload(clips=args.clips)
    out = CASES[args.case](GPUS[args.gpu], work, args.frontend_ms, args.scale)
    print(json.dumps(out))
    return 0


def frontend_main(scale: float, clips: int) -> int:
    """The front-end rows alone, printed with their assumptions; 1 when a target is missed."""
    from benchmarks.common import Results

    res = Results()
    frontend_rows(res, scale, clips)
    print("MODELLED, not measured on a GPU: can one engine's preprocessing thread feed the GPU?")
    print(json.dumps(res.meta["frontend_assumptions"], indent=1))
    for r in res.rows:
        print(f"  {r.clip_set}: {r.case}: {r.note}")
    missed = [q for q in res.ratios if q.target and not q.met]
    for q in res.ratios:
        verdict = "" if not q.target else (" (target " + q.target + (": met)" if q.met else ": NOT MET)"))
        print(f"  {q.name}: {q.value:.2f}{verdict}  [{q.note}]")
    return 1 if missed else 0


def assumptions(work: Workload, scale: float) -> dict:
    return {"gpus": {k: asdict(v) for k, v in GPUS.items()}, "workload": asdict(work), "time_scale": scale,
            "note": "modelled engine (sleeps), not a GPU measurement; see benchmarks/model_stage.py"}


if __name__ == "__main__":
    sys.exit(main())
