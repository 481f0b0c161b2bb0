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


def test_raylet_messages_reach_the_console_as_one_line_and_ray_bookkeeping_not_at_all(capsys):
    """What the driver prints of the raylet's messages inside a run or a fine-tuning job:
    an error's first line without its stack; the worker-pool start-up warning (a loaded
    node starting actors) not at all, the raylet's own log has it."""
    import ray._private.worker as worker

    from emodist.ray_settings import scoped

    pool = ("WARNING: 8 PYTHON worker processes have been started on node: 6f1e with address: 127.0.0.1, "
            "which is 4x the maximum expected startup concurrency (2). This could be a result of ...")
    died = ("The actor died unexpectedly before finishing this task. Error: Traceback (most recent call last):\n"
            '  File "x.py", line 1, in <module>\nRuntimeError: boom')
    printer = worker.print_to_stdstream
    with scoped():
        assert worker.print_to_stdstream is not printer
        worker.print_to_stdstream({"lines": [pool], "pid": "raylet", "is_err": False}, ignore_prefix=False)
        worker.print_to_stdstream({"lines": [pool, died], "pid": "raylet", "is_err": False}, ignore_prefix=False)
    assert worker.print_to_stdstream is printer
    out = capsys.readouterr()
    console = out.out + out.err
    assert "worker processes have been started" not in console, console
    assert console.count("The actor died unexpectedly before finishing this task.") == 1, console
    assert "Traceback" not in console and "boom" not in console, console
    # Outside the block Ray's printer is Ray's again: the same warning is printed.
    worker.print_to_stdstream({"lines": [pool], "pid": "raylet", "is_err": False}, ignore_prefix=False)
    out = capsys.readouterr()
    assert "worker processes have been started" in out.out + out.err
