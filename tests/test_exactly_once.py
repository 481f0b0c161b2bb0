"""Exactly one row per clip, whatever the input layout and however a run is started:
ids that cannot collide, resume keyed on (clip_id, uri) and the config hash, one run at a
time per output, retries that finish on 2 CPUs, clear refusals before any work, exit
statuses, and nothing of a credential in any output. The CLI runs as users run it."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from emodist import schema as col
from emodist.cli import app
from tests.conftest import SMALL, rows_by_clip

EMODIST = str(Path(sys.executable).parent / "emodist")
ROOT = Path(__file__).resolve().parents[1]
TINY = ["--config", str(ROOT / "configs" / "tiny-vlm.yaml"), "--set", "mode=sparse",
        *[a for s in SMALL for a in ("--set", s)]]


def cli(*args: str, cwd: Path | None = None):
    """`emodist` in this process (the session's Ray), from `cwd`."""
    here = os.getcwd()
    os.chdir(cwd or here)
    try:
        return CliRunner().invoke(app, list(args))
    finally:
        os.chdir(here)


def rows(out: Path, sub: str) -> list[dict]:
    return pads.dataset(out / sub).to_table().to_pylist()


# --- ids that cannot collide ---------------------------------------------------------------


def test_same_names_in_different_folders_are_different_clips(ray_local, tiny_vlm, clips_dir, tmp_path):
    """FERV39k's Scene/Class/NNNN: the same file name in two folders, as a folder, a glob
    and a manifest without ids: two clips, two rows."""
    src = tmp_path / "in"
    for sub in ("sub_a", "sub_b"):
        (src / sub).mkdir(parents=True)
        shutil.copy(clips_dir / "clip_00000.mp4", src / sub / "same.mp4")
    (src / "m.csv").write_text("uri,label\nsub_a/same.mp4,happy\nsub_b/same.mp4,sad\n")
    for name, inp in (("folder", src), ("glob", src / "*" / "*.mp4"), ("manifest", src / "m.csv")):
        out = tmp_path / name
        res = cli("run", "-i", str(inp), "-o", str(out), "--quiet", *TINY)
        assert res.exit_code == 0, res.output
        assert sorted(rows_by_clip(out)) == ["sub_a/same", "sub_b/same"], name
        assert "labeled 2 of 2" in res.output


def test_a_repeated_manifest_line_is_written_once_and_counted(ray_local, tiny_vlm, clips_dir, tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("uri\n" + f"{clips_dir}/clip_00000.mp4\n" * 3 + f"{clips_dir}/clip_00001.mp4\n")
    out = tmp_path / "out"
    res = cli("run", "-i", str(m), "-o", str(out), "--quiet", *TINY, "--set", "decode.batch_size=1")
    assert res.exit_code == 0, res.output
    assert all(v == ["prediction"] for v in rows_by_clip(out).values()) and len(rows_by_clip(out)) == 2
    assert json.loads((out / "summary.json").read_text())["duplicates"] == 2


def test_one_clip_id_for_two_uris_is_refused_at_start_naming_both_lines(ray_local, clips_dir, tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("clip_id,uri\nsame,a/x.mp4\nother,b/y.mp4\nsame,b/x.mp4\n")
    start = time.time()
    res = cli("run", "-i", str(m), "-o", str(tmp_path / "out"), "--quiet", *TINY)
    assert res.exit_code == 2
    assert "'same' is on m.csv line 2" in res.output and "m.csv line 4" in res.output
    assert "give each clip its own clip_id" in res.output and time.time() - start < 60
    assert not (tmp_path / "out" / "predictions").exists()


def test_the_same_key_in_two_shards_is_two_clips(ray_local, tiny_vlm, clips_dir, tmp_path):
    data = (clips_dir / "clip_00000.mp4").read_bytes()
    for name in ("shard-000000.tar", "shard-000001.tar"):
        with tarfile.open(tmp_path / name, "w") as tar:
            info = tarfile.TarInfo("000000.mp4")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "out"
    res = cli("run", "-i", str(tmp_path / "shard-*.tar"), "-o", str(out), "--quiet", *TINY)
    assert res.exit_code == 0, res.output
    assert sorted(rows_by_clip(out)) == ["shard-000000/000000", "shard-000001/000000"]


# --- resume keyed on what was labeled --------------------------------------------------------


def test_a_rerun_under_another_config_is_refused_unless_asked(ray_local, tiny_vlm, clips_dir, tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("uri\n" + "".join(f"{clips_dir}/clip_0000{i}.mp4\n" for i in range(2)))
    out = tmp_path / "out"
    assert cli("run", "-i", str(m), "-o", str(out), "--quiet", *TINY).exit_code == 0
    res = cli("run", "-i", str(m), "-o", str(out), "--quiet", *TINY, "--set", "mode=dense")
    assert res.exit_code == 2
    line = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(line) == 1 and "holds 2 rows labeled under config" in line[0]
    assert "changed: mode ('sparse' -> 'dense')" in line[0] and "--new-config" in line[0]
    res = cli("run", "-i", str(m), "-o", str(out), "--quiet", *TINY, "--set", "mode=dense", "--new-config")
    assert res.exit_code == 0, res.output
    preds = rows(out, "predictions")
    assert sorted((r[col.MODE], r[col.CLIP_ID]) for r in preds) == sorted(
        (mode, cid) for mode in ("sparse", "dense") for cid in {r[col.CLIP_ID] for r in preds})
    assert len({r[col.CONFIG_HASH] for r in preds}) == 2


@pytest.mark.slow
def test_another_folder_with_the_same_names_is_not_taken_as_done(ray_local, tiny_vlm, clips_dir, tmp_path):
    """Resume keys on (clip_id, uri): a second input folder whose names overlap is labeled,
    and 'already done' counts clips of this input only."""
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        for i in range(2):
            shutil.copy(clips_dir / f"clip_0000{i}.mp4", d / f"clip_0000{i}.mp4")
    shutil.copy(clips_dir / "clip_00002.mp4", b / "clip_00002.mp4")
    out = tmp_path / "out"
    assert cli("run", "-i", str(a), "-o", str(out), "--quiet", *TINY).exit_code == 0
    res = cli("run", "-i", str(b), "-o", str(out), "--quiet", *TINY)
    assert res.exit_code == 0 and "labeled 3 of 3" in res.output and "already done" not in res.output
    again = cli("run", "-i", str(b), "-o", str(out), "--quiet", *TINY)
    assert "labeled 0 of 0" in again.output and "3 already done, skipped" in again.output
    assert len(rows(out, "predictions")) == 5


def test_relative_manifest_uris_resolve_the_same_from_any_directory(ray_local, tiny_vlm, clips_dir, bad_files, tmp_path):
    """Run from one directory with a relative manifest path, retry from another: the
    stored uris are absolute (resolved against the manifest, never the cwd)."""
    work = tmp_path / "work"
    (work / "mf").mkdir(parents=True)
    shutil.copy(clips_dir / "clip_00000.mp4", work / "mf" / "good1.mp4")
    shutil.copy(bad_files["text"], work / "mf" / "bad.mp4")
    (work / "mf" / "m.csv").write_text("uri\ngood1.mp4\nbad.mp4\n")
    res = cli("run", "-i", "mf/m.csv", "-o", "out", "--quiet", *TINY, cwd=work)
    assert res.exit_code == 0, res.output
    fails = rows(work / "out", "failures")
    assert [r[col.URI] for r in fails] == [str(work / "mf" / "bad.mp4")]
    shutil.copy(clips_dir / "clip_00001.mp4", work / "mf" / "bad.mp4")  # the user fixes it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = cli("run", "-i", str(work / "mf" / "m.csv"), "-o", str(work / "out"), "--quiet", *TINY,
              "--retry-failures", cwd=elsewhere)
    assert res.exit_code == 0, res.output
    assert rows_by_clip(work / "out") == {"good1": ["prediction"], "bad": ["prediction"]}


def test_retry_reads_a_manifest_again_for_its_lines_that_did_not_parse(ray_local, tiny_vlm, clips_dir, tmp_path):
    m = tmp_path / "m.csv"
    m.write_text(f"uri,label\n{clips_dir}/clip_00000.mp4,happy\n{clips_dir}/clip_00001.mp4,sad,extra\n")
    out = tmp_path / "out"
    assert cli("run", "-i", str(m), "-o", str(out), "--quiet", *TINY).exit_code == 0
    (listed,) = rows(out, "failures")
    assert listed[col.ERROR_STAGE] == "list" and "line 3" in listed[col.ERROR_MESSAGE]
    m.write_text(f"uri,label\n{clips_dir}/clip_00000.mp4,happy\n{clips_dir}/clip_00001.mp4,sad\n")
    res = cli("run", "-i", str(m), "-o", str(out), "--quiet", *TINY, "--retry-failures")
    assert res.exit_code == 0, res.output
    by = rows_by_clip(out)
    assert sorted(v for vs in by.values() for v in vs) == ["prediction", "prediction"]
    assert len(pads.dataset(out / "failures").to_table()) == 0


@pytest.mark.slow
def test_retry_failures_finishes_on_2_cpus_with_the_default_resources(tiny_vlm, clips_dir, bad_files, tmp_path):
    """As a user runs it: its own local Ray on this 2-CPU machine, the default resources
    (decode 1 CPU, labeler 0.5): the retry's read task must fit beside the actors."""
    m = tmp_path / "m.csv"
    m.write_text(f"uri\n{clips_dir}/clip_00000.mp4\n{bad_files['zero']}\n{bad_files['text']}\n")
    out = tmp_path / "out"
    base = [EMODIST, "run", "-i", str(m), "-o", str(out), "--quiet",
            "--config", str(ROOT / "configs" / "tiny-vlm.yaml"), "--set", "mode=sparse",
            "--set", "describer.num_cpus=0.5", "--set", "labeler.num_cpus=0.5", "--set", "decode.num_cpus=1"]
    first = subprocess.run(base, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    # the random VLM, chosen explicitly, is said to be random on every run; Ray's news
    # about token authentication on a local loopback Ray is not
    assert ("labeler.model=builtin:tiny-vlm has random weights: its labels mean nothing (it exercises the "
            "machinery); for real labels offline leave describer and labeler at their defaults") in first.stderr
    assert "Token authentication" not in first.stderr
    again = subprocess.run(base + ["--retry-failures"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 3, again.stdout[-2000:] + again.stderr[-2000:]  # both still bad
    assert "labeled 0 of 2 clips" in again.stdout and "every clip failed (2)" in again.stderr
    fails = rows(out, "failures")
    assert sorted(r[col.ATTEMPTS] for r in fails) == [2, 2]


# --- one run at a time, and what a run says when it cannot start -----------------------------


@pytest.mark.slow
def test_a_second_run_into_a_held_output_is_refused_at_once(tiny_vlm, clips_dir, tmp_path):
    """Two runs at once into one output: the second is refused at once naming the first
    (host, pid, start); the first finishes with exactly one row per clip."""
    out = tmp_path / "out"
    cmd = [EMODIST, "run", "-i", str(clips_dir / "manifest.csv"), "-o", str(out), "--quiet",
           "--config", str(ROOT / "configs" / "tiny-vlm.yaml"), "--set", "mode=msce",
           "--set", "labeler.permutations=3", "--set", "decode.batch_size=1", "--set", "labeler.batch_size=1",
           *[a for s in SMALL for a in ("--set", s)]]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "_emodist" / "lease.json").exists():
        assert first.poll() is None and time.time() < deadline, "the first run ended before it held the output"
        time.sleep(0.05)
    start = time.time()
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2 and time.time() - start < 60
    assert f"another run is writing this output (host {os.uname().nodename}, pid {first.pid}, started" in second.stderr
    assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
    done = rows_by_clip(out)
    assert len(done) == 10 and all(v == ["prediction"] for v in done.values())


@pytest.mark.parametrize("override, needle", [
    ("labeler.model=org/no-such-model", "labeler.model='org/no-such-model' is not in the local model cache"),
    ("labeler.model=/nowhere/model", "labeler.model='/nowhere/model': no model folder there"),
    ("labeler.device=tpu", "config key 'labeler.device': 'tpu' is not a device; use auto, cpu, cuda or cuda:N"),
    ("labeler.prior=[0.5, 0.5]", "labeler.prior has 2 values for 7 labels"),
    ('labeler.prompt="Which? {nonexistent_field}"', "unknown placeholder(s) {nonexistent_field} in labeler.prompt"),
])
def test_model_settings_are_checked_before_ray_starts(clips_dir, tmp_path, override, needle, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.time()
    res = cli("run", "-i", str(clips_dir), "-o", str(tmp_path / "out"), *TINY, "--set", override)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and needle in lines[0], res.output
    assert time.time() - start < 20  # seconds, not a Ray start and 168 s of actor tracebacks


def test_a_run_where_every_clip_fails_exits_3(ray_local, bad_files, tmp_path):
    src = tmp_path / "bad"
    src.mkdir()
    for name in ("zero", "text"):
        shutil.copy(bad_files[name], src / bad_files[name].name)
    res = cli("run", "-i", str(src), "-o", str(tmp_path / "out"), "--quiet", *TINY)
    assert res.exit_code == 3 and "every clip failed (2)" in res.output


def test_failures_is_readable_when_nothing_failed(ray_local, tiny_vlm, clips_dir, tmp_path):
    m = tmp_path / "m.csv"
    m.write_text(f"uri\n{clips_dir}/clip_00000.mp4\n")
    out = tmp_path / "out"
    assert cli("run", "-i", str(m), "-o", str(out), "--quiet", *TINY).exit_code == 0
    parts = sorted((out / "failures").glob("*.parquet"))  # what DuckDB's 'out/failures/*.parquet' reads
    assert len(parts) == 1 and pq.read_schema(parts[0]).equals(col.FAILURES)
    assert pq.read_table(parts[0]).num_rows == 0


def test_a_password_in_an_input_url_appears_nowhere(tmp_path):
    res = cli("run", "-i", "http://alice:S3cretPassw0rd@127.0.0.1:9/clips/x.mp4", "-o", str(tmp_path / "out"), *TINY)
    assert res.exit_code == 2 and "S3cretPassw0rd" not in res.output and "alice" not in res.output
    assert "--input http://127.0.0.1:9/clips/x.mp4: the uri carries credentials" in res.output


def test_a_full_disk_is_one_line_no_temp_file_and_a_rerun_resumes(ray_local, tiny_vlm, clips_dir, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a size-capped tmpfs here (needs root)")
    try:
        m = tmp_path / "m.csv"
        m.write_text("uri\n" + "".join(f"{clips_dir}/clip_0000{i}.mp4\n" for i in range(6)))
        filler = mnt / "filler"
        filler.write_bytes(b"x" * (100 << 10))  # leave room for a few parts only
        out = mnt / "out"
        res = cli("run", "-i", str(m), "-o", str(out), "--quiet", *TINY, "--set", "run.part_rows=1")
        assert res.exit_code == 1, res.output
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and "no space left writing" in lines[0] and "run the same command again" in lines[0]
        assert not [p for p in out.rglob(".*.tmp")]
        done = rows_by_clip(out)
        filler.unlink()
        res = cli("run", "-i", str(m), "-o", str(out), "--quiet", *TINY, "--set", "run.part_rows=1")
        assert res.exit_code == 0, res.output
        after = rows_by_clip(out)
        assert len(after) == 6 and all(len(v) == 1 for v in after.values()) and set(done) <= set(after)
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
