"""A run's Ray and Ray Data settings are its own (emodist/ray_settings.py): a run, then
`diagnose` in the same process; each run's dataset carries its own settings, and the
process keeps the caller's DataContext, logger levels, Ray's printer and environment."""
from __future__ import annotations

import logging
import os

import emodist.evaluate  # noqa: F401 - importing scikit-learn sets KMP_* variables, once per process
from emodist import pipeline
from emodist.diagnose import diagnose
from emodist.ray_settings import QUIET, log_levels
from tests.conftest import tiny_config


def process_settings() -> dict:
    import ray._private.worker as worker
    from ray.data import DataContext

    ctx = DataContext.get_current()
    return {"context": id(ctx), "progress_bars": ctx.enable_progress_bars,
            "object_store": ctx.execution_options.resource_limits.object_store_memory,
            "block": ctx.target_max_block_size, "levels": {n: logging.getLogger(n).level for n in QUIET},
            "printer": worker.print_to_stdstream, "env": dict(os.environ)}


def test_log_levels_are_put_back_also_after_an_error():
    logger = logging.getLogger("emodist.test.scoped")
    logger.setLevel(logging.DEBUG)
    try:
        with log_levels({logger.name: logging.CRITICAL}):
            assert logger.level == logging.CRITICAL
            raise KeyError("stop")
    except KeyError:
        pass
    assert logger.level == logging.DEBUG


def test_a_run_then_diagnose_in_one_process_share_no_settings(ray_local, tiny_vlm, clips_dir, tmp_path, monkeypatch):
    from ray.data import DataContext

    m = tmp_path / "m.csv"
    m.write_text("uri,label\n" + "".join(f"{clips_dir}/clip_0000{i}.mp4,sad\n" for i in range(2)))
    # The caller's own choices, which no run may change: bars on, Ray Data's logs at DEBUG.
    monkeypatch.setattr(DataContext.get_current(), "enable_progress_bars", True)
    saved_level = logging.getLogger("ray.data").level
    logging.getLogger("ray.data").setLevel(logging.DEBUG)
    seen = []  # what each run's dataset carries, and the process while it runs
    build = pipeline.build_dataset

    def spy(cfg, clips):
        ds = build(cfg, clips)
        ctx = ds.context
        seen.append({"progress_bars": ctx.enable_progress_bars,
                     "object_store": ctx.execution_options.resource_limits.object_store_memory,
                     "block": ctx.target_max_block_size, "ray.data": logging.getLogger("ray.data").level})
        return ds

    monkeypatch.setattr(pipeline, "build_dataset", spy)
    try:
        before = process_settings()
        assert before["progress_bars"] is True and before["levels"]["ray.data"] == logging.DEBUG
        assert before["object_store"] != 300 * 2**20 and before["block"] != 4 * 2**20
        first = pipeline.run(tiny_config("run.object_store_mb=300", "run.block_mb=2"), str(m), str(tmp_path / "out"),
                             progress=False)
        assert first.labeled + first.failed == 2
        assert process_settings() == before
        report = diagnose(tiny_config(), str(m), str(tmp_path / "d"), rates_fps=(), shuffle=False, bootstrap=0)
        assert [v["variant"] for v in report["variants"]] == ["original"]
        assert process_settings() == before
    finally:
        logging.getLogger("ray.data").setLevel(saved_level)
    assert seen == [
        {"progress_bars": False, "object_store": 300 * 2**20, "block": 2 * 2**20, "ray.data": logging.WARNING},
        # diagnose's run: Ray's default object store share and the default block size, not the first run's
        {"progress_bars": False, "object_store": before["object_store"], "block": 4 * 2**20,
         "ray.data": logging.WARNING},
    ]
