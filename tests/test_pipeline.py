"""End to end: the real Ray pipeline on synthetic clips and bad files, through the CLI."""
import json

import numpy as np
import pyarrow.dataset as pads
import pytest
from typer.testing import CliRunner

from emodist import schema as col
from emodist.cli import app
from emodist.io.source import list_clips
from tests.conftest import CONFIGS

# The tiny random VLM (the default labeler, the specialist, finds no face in synthetic clips).
SMALL = ["--config", str(CONFIGS / "tiny-vlm.yaml"),
         "--set", "decode.num_cpus=0.5", "--set", "describer.num_cpus=0.5", "--set", "labeler.num_cpus=0.5"]


@pytest.fixture(scope="module")
def result(ray_local, tiny_vlm, mixed_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    res = CliRunner().invoke(app, ["run", "-i", str(mixed_dir), "-o", str(out), "--quiet", *SMALL])
    return res, out


def test_run_exits_0_and_says_how_many_failed(result):
    res, _ = result
    assert res.exit_code == 0, res.output
    assert "labeled 10 of 14 clips" in res.output and "4 failed" in res.output


def test_one_prediction_row_per_good_clip_with_ids_and_uris(result, mixed_dir):
    _, out = result
    preds = pads.dataset(out / "predictions").to_table().to_pylist()
    listed = {r["clip_id"]: r["uri"] for r in list_clips(str(mixed_dir)).to_pylist()}
    good = {k: v for k, v in listed.items() if k.startswith("clip_")}
    assert sorted(r[col.CLIP_ID] for r in preds) == sorted(good)  # exactly once each
    for r in preds:
        assert r[col.URI] == good[r[col.CLIP_ID]]
        assert r[col.LABEL_NAMES] == ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]
        assert sum(r[col.PROBS]) == pytest.approx(1, abs=1e-5)
        assert r[col.LABEL] == r[col.LABEL_NAMES][int(np.argmax(r[col.PROBS]))]
        # keyframes every 1 s from 0, over the clip; one description per gap
        n = int(np.floor(r[col.DURATION_S] - 1e-6)) + 1
        np.testing.assert_allclose(r[col.KEYFRAME_TS], np.arange(n, dtype=float))
        assert len(r[col.DESCRIPTIONS]) == n - 1 == len(r[col.GAP_SPANS])
        assert r[col.MODE] == "msce" and r[col.LABELER_MODEL] == "builtin:tiny-vlm"
        assert set(r[col.TIMINGS]) == {"decode", "face", "describe", "label"}
        assert r[col.TIMINGS]["decode"] > 0 and r[col.TIMINGS]["face"] == 0  # no face stage
        assert len(r[col.CONFIG_HASH]) == 16


def test_each_bad_file_is_one_failure_row_naming_it(result, bad_files):
    _, out = result
    fails = {r[col.CLIP_ID]: r for r in pads.dataset(out / "failures").to_table().to_pylist()}
    assert sorted(fails) == sorted(p.stem for p in bad_files.values())
    for r in fails.values():
        assert r[col.ERROR_STAGE] == "decode" and r[col.ERROR_TYPE] == "ClipError"
        assert r[col.URI] in r[col.ERROR_MESSAGE]
    assert "0 bytes" in fails["zero"][col.ERROR_MESSAGE]
    assert "truncated" in fails["cut_frames"][col.ERROR_MESSAGE]


def test_summary_json(result):
    _, out = result
    s = json.loads((out / "summary.json").read_text())
    assert (s["clips"], s["labeled"], s["failed"]) == (14, 10, 4)
    assert s["failures_by_stage"] == {"decode": 4}


def test_bad_config_key_exits_nonzero_with_one_line(tmp_path):
    res = CliRunner().invoke(app, ["run", "-i", str(tmp_path), "-o", str(tmp_path / "o"), "--set", "decode.fsp=3"])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "unknown config key 'decode.fsp'" in lines[0]


def test_missing_input_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(app, ["run", "-i", str(tmp_path / "nope"), "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no such folder, glob or manifest" in res.output


def test_the_progress_bar_waits_for_the_first_batch_and_knows_its_total(capsys):
    """Ray prints its own lines while the stage actors start: the bar is drawn only from
    the first finished batch on, after one line that says what is happening."""
    from emodist.pipeline import _progress

    with _progress(True, 30) as advance:
        assert capsys.readouterr().out == "labeling 30 clips: starting the stage actors ...\n"
        advance(3, 1, 2)  # labeled, failed, skipped as already done: all move the bar
    out = capsys.readouterr().out
    assert "6/30" in out and "1 failed" in out


def test_failure_rows_reach_the_driver_while_the_listing_still_runs(ray_local, tmp_path):
    """Ray Data holds a task's output until its target block size has built up (128 MiB by
    default: the failure rows of a million-line manifest reached the driver only when the
    listing ended). With run.block_mb the first carrier arrives while the listing still
    waits (Ray keeps one block back: two carriers come before the wait)."""
    import os
    import time
    from functools import partial

    from emodist.output import carry
    from emodist.io import rows
    from emodist.io.source import dataset_of
    from emodist.pipeline import frames_dataset
    from tests.conftest import tiny_config

    gate = tmp_path / "gate"

    def listing(gate: str, n: int):
        for i in range(n):
            yield rows.fail(f"c{i}", f"/missing/c{i}.mp4", "not found")
        deadline = time.time() + 30
        while not os.path.exists(gate) and time.time() < deadline:
            time.sleep(0.05)
        yield rows.fail("last", "/missing/last.mp4", "gate opened" if os.path.exists(gate) else "gate timed out")

    # decode.batch_size=1: the decode pool starts a task per row (a carrier), not per 16 rows
    cfg = tiny_config("run.block_mb=0.001", "decode.batch_size=1")
    clips = dataset_of([(partial(listing, str(gate), 2 * rows.CARRY_ROWS), "held")], cfg)
    batches = iter(frames_dataset(cfg, clips).iter_batches(batch_size=None, batch_format="numpy"))
    first = carry.unpack(next(batches))[0]
    gate.touch()  # the listing may end only now
    rest = [carry.unpack(b)[0] for b in batches]
    assert first.num_rows == rows.CARRY_ROWS
    assert sum(t.num_rows for t in rest) == rows.CARRY_ROWS + 1
    assert rest[-1].column("error_message").to_pylist()[-1].endswith("gate opened")


# --- hostile input (issue 27) -----------------------------------------------------------

SECRET_KEY, SECRET = "KEYID27ABCD", "Sekrit27pw"


def _all_text(out) -> str:
    """Every value of every committed row, and summary.json, as one text."""
    import pyarrow.parquet as pq

    parts = sorted(out.glob("predictions/part-*.parquet")) + sorted(out.glob("failures/part-*.parquet"))
    return "\n".join(str(pq.read_table(p).to_pylist()) for p in parts) + (out / "summary.json").read_text()


def test_credentials_in_manifest_uris_reach_no_row_and_one_file_spelled_three_ways_is_one_clip(
        ray_local, tiny_vlm, clips_dir, tmp_path):
    import pyarrow.parquet as pq

    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes((clips_dir / "clip_00000.mp4").read_bytes())
    manifest = tmp_path / "m.csv"
    manifest.write_text("uri,label\nclips/a.mp4,happy\n./clips/a.mp4,happy\nclips//a.mp4,happy\n"
                        f"s3://{SECRET_KEY}:{SECRET}@bucket/x.mp4,sad\nhttps://{SECRET_KEY}:{SECRET}@example.com/v.mp4,sad\n")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["run", "-i", str(manifest), "-o", str(out), "--quiet", *SMALL, "--set", "mode=sparse"])
    assert res.exit_code == 0, res.output
    assert "labeled 1 of 3 clips" in res.output and "2 failed" in res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["duplicates"] == 2  # './clips/a.mp4' and 'clips//a.mp4' are clips/a.mp4 again
    fails = pads.dataset(out / "failures").to_table().to_pylist()
    assert sorted(r["clip_id"] for r in fails) == ["bucket/x", "example.com/v"]
    assert sorted(r["uri"] for r in fails) == ["https://example.com/v.mp4", "s3://bucket/x.mp4"]
    assert all("the uri carries credentials" in r["error_message"] for r in fails)
    shown = CliRunner().invoke(app, ["show", str(out)])
    for text in (_all_text(out), res.output, shown.output):
        assert SECRET not in text and SECRET_KEY not in text

    # An output written before uris lost their credentials: --retry-failures reads its
    # failure rows as clips, and refuses them again without the credentials.
    part = sorted((out / "failures").glob("part-*.parquet"))[0]
    t = pq.read_table(part)
    dirty = [u.replace("://", f"://{SECRET_KEY}:{SECRET}@", 1) for u in t.column("uri").to_pylist()]
    t = t.set_column(t.schema.get_field_index("uri"), "uri", pa_array(dirty))
    pq.write_table(t, part)
    retry = CliRunner().invoke(app, ["run", "-i", str(manifest), "-o", str(out), "--quiet", *SMALL,
                                     "--set", "mode=sparse", "--retry-failures"])
    assert retry.exit_code == 3, retry.output  # every retried clip failed again
    assert SECRET not in _all_text(out) and SECRET not in retry.output


def pa_array(values):
    import pyarrow as pa

    return pa.array(values, pa.string())


def test_credentials_in_the_input_or_output_uri_are_refused_at_start(tmp_path):
    for args in (["-i", f"s3://{SECRET_KEY}:{SECRET}@bucket/clips/", "-o", str(tmp_path / "o")],
                 ["-i", f"s3://{SECRET_KEY}:{SECRET}@bucket/clips/*.mp4", "-o", str(tmp_path / "o")],
                 ["-i", str(tmp_path), "-o", f"s3://{SECRET_KEY}:{SECRET}@bucket/out"]):
        res = CliRunner().invoke(app, ["run", *args])
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and "the uri carries credentials (user:password@)" in lines[0]
        assert "invalid bucket name" not in lines[0].lower()
        assert SECRET not in res.output and SECRET_KEY not in res.output


EMODIST = str(__import__("pathlib").Path(__import__("sys").executable).parent / "emodist")


@pytest.mark.slow
def test_an_actor_that_cannot_start_is_one_console_line_naming_the_log_file(tiny_vlm, clips_dir, tmp_path):
    """A model folder whose weights file is damaged passes the start checks (every file is
    there) and fails in the model actor: one line, its stack in a log file."""
    import shutil
    import subprocess

    model = tmp_path / "model"
    shutil.copytree(tiny_vlm, model)
    weights = sorted(model.glob("*.safetensors"))
    assert weights
    for w in weights:
        w.write_bytes(b"not the weights")
    out = tmp_path / "out"
    cmd = [EMODIST, "run", "-i", str(clips_dir / "clip_00000.mp4"), "-o", str(out), "--quiet",
           "--set", "run.num_cpus=2", "--set", "mode=sparse", "--set", "labeler.backend=transformers",
           "--set", f"labeler.model={model}", "--set", "decode.num_cpus=0.5", "--set", "labeler.num_cpus=0.5"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    console = (res.stdout + res.stderr).splitlines()
    assert "Traceback" not in res.stdout + res.stderr
    assert len(console) <= 4, console  # the line, and at most Ray's own one-line notices
    line = console[-1]
    assert line.startswith("error: describe+label actor failed: "), line
    log_file = line.rsplit("the stack is in ", 1)[1].strip()
    assert log_file.startswith(str(out / "_emodist" / "logs"))
    assert "Traceback" in open(log_file).read()
    # the folder stays readable by DuckDB, pandas and polars: a part in each folder
    assert list((out / "predictions").glob("part-*.parquet")) and list((out / "failures").glob("part-*.parquet"))


def test_sigterm_stops_the_run_with_one_line_and_a_readable_output(clips_dir, tmp_path):
    import signal
    import subprocess
    import time

    out = tmp_path / "out"
    cmd = [EMODIST, "run", "-i", str(clips_dir), "-o", str(out), "--config", str(CONFIGS / "tiny-vlm.yaml"),
           "--set", "run.num_cpus=2", "--set", "decode.batch_size=1", "--set", "labeler.batch_size=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    # the config record is written once Ray has started (its handler dumps a native stack)
    while time.time() < deadline and not (out / "_emodist" / "configs").exists():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stdout[-2000:] + stderr[-2000:]
    assert "SIGTERM received" not in stderr and "PC: @" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("error: stopped by SIGTERM; the rows committed so far are kept")
    assert list((out / "predictions").glob("part-*.parquet")) and list((out / "failures").glob("part-*.parquet"))


def test_a_sigterm_whose_exception_ray_swallows_still_stops_the_run_at_the_next_batch(
        ray_local, tiny_vlm, clips_dir, tmp_path, monkeypatch):
    """The SIGTERM handler raises in whatever the main thread runs, and Ray's code swallows it
    at times (Ray Data's metadata export catches Exception around dataclasses.asdict: a CI
    run labeled every clip and exited 0). Here the signal lands in such a block, inside the
    first batch's commit: the run stops after that batch, and a rerun labels the rest."""
    import os
    import signal
    import sys
    import threading
    import time

    from emodist.output.commit import Committer
    from emodist.pipeline import Terminated, run
    from tests.conftest import rows_by_clip, tiny_config

    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # the handler silences it: put back
    assert threading.current_thread() is threading.main_thread()  # else SIGTERM would end this worker
    add, first_batch = Committer.add, []

    def add_then_a_swallowed_sigterm(self, batch):
        added = add(self, batch)
        if not first_batch:
            first_batch.append(len(batch["clip_id"]))
            try:  # as Ray's own code does
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler runs here and raises
            except Exception:  # noqa: BLE001
                pass
        return added

    monkeypatch.setattr(Committer, "add", add_then_a_swallowed_sigterm)
    cfg = tiny_config("decode.batch_size=1", "labeler.batch_size=1", "run.part_rows=1")
    out = tmp_path / "out"
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated):
        run(cfg, str(clips_dir), str(out), progress=False)
    assert signal.getsignal(signal.SIGTERM) is before  # the run's handler is gone with it
    assert len(rows_by_clip(out)) == first_batch[0] < 10  # stopped after the first batch
    monkeypatch.setattr(Committer, "add", add)
    summary = run(cfg, str(clips_dir), str(out), progress=False)
    assert summary.labeled == 10 - first_batch[0]
    assert sorted(map(len, rows_by_clip(out).values())) == [1] * 10  # every clip once


@pytest.mark.slow
def test_a_normal_run_prints_no_ray_core_worker_line(clips_dir, tmp_path):
    """Ray's driver prints once per process 'core_worker.cc: Actor ... has constructor
    arguments in the object store and max_restarts > 0' for the first Ray Data pool actor
    (Ray Data passes its own refs); init_ray spends it away from the console."""
    import subprocess

    out = tmp_path / "out"
    cmd = [EMODIST, "run", "-i", str(clips_dir / "clip_00000.mp4"), "-o", str(out), *SMALL, "--set", "run.num_cpus=2"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    console = res.stdout + res.stderr
    assert res.returncode == 0, console[-3000:]
    assert "labeled 1 of 1 clips" in res.stdout, console[-3000:]
    assert "core_worker.cc" not in console and "constructor arguments" not in console, console
