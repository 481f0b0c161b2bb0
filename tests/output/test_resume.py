"""Resume, retry of failures, and faults injected into model actors."""
import shutil

import pyarrow.dataset as pads

from emodist import pipeline
from tests.conftest import rows_by_clip, tiny_config


def manifest(path, uris):
    path.write_text("uri,label\n" + "".join(f"{u},happy\n" for u in uris))
    return str(path)


def test_rerun_skips_finished_clips_and_writes_none_twice(ray_local, tiny_vlm, clips_dir, tmp_path, monkeypatch):
    uris = [str(clips_dir / f"clip_{i:05d}.mp4") for i in range(6)]
    out = tmp_path / "out"
    # ids relative to the clips' folder (input.root), as a dataset's manifests have them
    cfg = tiny_config("mode=sparse", "run.part_rows=2", "run.object_store_mb=64", f"input.root={clips_dir}")
    built = []  # the run's dataset: the cap is on its own context, not the process's (ray_settings.py)
    build = pipeline.build_dataset
    monkeypatch.setattr(pipeline, "build_dataset", lambda c, clips: built.append(build(c, clips)) or built[-1])
    first = pipeline.run(cfg, manifest(tmp_path / "a.csv", uris[:2]), str(out), progress=False)
    assert (first.labeled, first.skipped_done) == (2, 0)
    limits = built[0].context.execution_options.resource_limits
    assert limits.object_store_memory == 64 * 2**20  # decode cannot run far ahead of the model
    second = pipeline.run(cfg, manifest(tmp_path / "b.csv", uris + uris[:1]), str(out), progress=False)
    assert (second.labeled, second.failed, second.skipped_done) == (4, 0, 2)
    third = pipeline.run(cfg, str(tmp_path / "b.csv"), str(out), progress=False)
    assert (third.labeled, third.skipped_done) == (0, 6)
    rows = rows_by_clip(out)
    assert sorted(rows) == [f"clip_{i:05d}" for i in range(6)]
    assert all(v == ["prediction"] for v in rows.values())


def test_retry_failures_reruns_only_failed_clips_and_counts_attempts(ray_local, tiny_vlm, clips_dir, bad_files, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for p in [clips_dir / "clip_00000.mp4", bad_files["zero"], bad_files["text"]]:
        shutil.copy(p, src / p.name)
    out = tmp_path / "out"
    cfg = tiny_config("mode=sparse")
    s = pipeline.run(cfg, str(src), str(out), progress=False)
    assert (s.labeled, s.failed) == (1, 2)
    shutil.copy(clips_dir / "clip_00001.mp4", src / "zero.mp4")  # the user fixes one file
    r = pipeline.run(cfg, str(src), str(out), progress=False, retry_failures=True)
    assert (r.labeled, r.failed, r.clips) == (1, 1, 2)
    rows = rows_by_clip(out)
    assert rows == {"clip_00000": ["prediction"], "zero": ["prediction"], "notes": ["failure"]}
    fail = pads.dataset(out / "failures").to_table().to_pylist()[0]
    assert fail["attempts"] == 2 and "not a readable video" in fail["error_message"]
    assert not list((out / "failures" / "_retried").glob("*.parquet"))


def test_actor_that_dies_is_restarted_and_its_clips_retried(ray_local, tiny_vlm, clips_dir, tmp_path, inject):
    marker = inject("label", "exit", after=1)
    cfg = tiny_config("mode=sparse", "labeler.batch_size=2", "decode.batch_size=2")
    s = pipeline.run(cfg, str(clips_dir / "manifest.csv"), str(tmp_path / "out"), progress=False)
    assert marker.exists()  # the fault really fired
    assert (s.labeled, s.failed) == (10, 0)
    rows = rows_by_clip(tmp_path / "out")
    assert len(rows) == 10 and all(v == ["prediction"] for v in rows.values())


def test_model_call_that_raises_fails_no_clip_silently(ray_local, tiny_vlm, clips_dir, tmp_path, inject):
    marker = inject("label", "raise")
    cfg = tiny_config("mode=sparse")
    s = pipeline.run(cfg, str(clips_dir / "manifest.csv"), str(tmp_path / "out"), progress=False)
    assert marker.exists()
    rows = rows_by_clip(tmp_path / "out")
    assert len(rows) == 10 and all(len(v) == 1 for v in rows.values())
    assert s.labeled + s.failed == 10 and s.failed == 1


def test_an_engine_that_dies_mid_batch_loses_no_clip_and_fails_none(ray_local, tiny_vlm, clips_dir, tmp_path, inject):
    """The engine raises EngineDead on its 3rd request, in msce with several batches in
    flight: the actor exits, Ray restarts it and retries its batches; every clip gets
    its prediction and none is marked failed for the engine's death."""
    marker = inject("describe", "engine_dead", after=2)
    cfg = tiny_config("mode=msce", "labeler.batch_size=2", "decode.batch_size=2", "labeler.batches_in_flight=2")
    s = pipeline.run(cfg, str(clips_dir / "manifest.csv"), str(tmp_path / "out"), progress=False)
    assert marker.exists()  # the engine really died
    assert (s.labeled, s.failed) == (10, 0)
    rows = rows_by_clip(tmp_path / "out")
    assert len(rows) == 10 and all(v == ["prediction"] for v in rows.values())


def test_a_damaged_part_is_named_with_its_fix_and_its_clips_are_labeled_again(ray_local, tiny_vlm, clips_dir, tmp_path):
    """A predictions part cut to a few bytes used to stop every later run of the output
    with a pyarrow traceback that named no file."""
    from typer.testing import CliRunner

    from emodist.cli import app
    from tests.conftest import CONFIGS

    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        shutil.copy(clips_dir / f"clip_{i:05d}.mp4", src)
    out = tmp_path / "out"
    cmd = ["run", "-i", str(src), "-o", str(out), "--quiet", "--config", str(CONFIGS / "tiny-vlm.yaml"),
           "--set", "mode=sparse", "--set", "labeler.num_cpus=0.5", "--set", "decode.num_cpus=0.5"]
    assert CliRunner().invoke(app, cmd).exit_code == 0
    part = sorted((out / "predictions").glob("part-*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:6])
    res = CliRunner().invoke(app, cmd)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and str(part) in lines[0] and "damaged" in lines[0], lines
    assert "move it out of predictions/ and failures/" in lines[0] and "its clips are labeled again" in lines[0]
    # the fix, as the line says it
    (out / "_emodist" / "damaged").mkdir()
    part.rename(out / "_emodist" / "damaged" / part.name)
    again = CliRunner().invoke(app, cmd)
    assert again.exit_code == 0, again.output
    assert "labeled 2 of 2 clips" in again.output
    assert rows_by_clip(out) == {"clip_00000": ["prediction"], "clip_00001": ["prediction"]}
