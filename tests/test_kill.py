"""A driver killed with SIGKILL mid-run loses nothing committed; the same command,
run again, finishes the job with exactly one row per clip."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emodist.io.rows import relative_id
from tests.conftest import rows_by_clip

EMODIST = str(Path(sys.executable).parent / "emodist")

pytestmark = pytest.mark.slow  # a whole run killed and run again: the slow tier (scripts/test.sh --all)


def test_sigkill_then_rerun_gives_one_row_per_clip(clips_dir, bad_files, emodist_cache, tmp_path):
    manifest = tmp_path / "m.csv"
    uris = sorted(str(p) for p in clips_dir.glob("*.mp4")) + [str(bad_files["text"])]
    manifest.write_text("uri,label\n" + "".join(f"{u},happy\n" for u in uris))
    out = tmp_path / "out"
    cmd = [EMODIST, "run", "-i", str(manifest), "-o", str(out), "--quiet", "--config", "configs/tiny-vlm.yaml",
           # msce with 3 label orders: enough work per clip that the kill lands mid-run
           "--set", "mode=msce", "--set", "labeler.permutations=3", "--set", "run.part_rows=1",
           "--set", "decode.batch_size=1",
           "--set", "labeler.batch_size=1", "--set", "run.num_cpus=2", "--set", f"input.root={clips_dir}"]
    cwd = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(cmd, cwd=cwd, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and not list((out / "predictions").glob("part-*.parquet")):
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
    proc.wait()
    before = rows_by_clip(out)
    assert 1 <= len(before) < len(uris), "the kill should land mid-run"
    # The killed run's key store stays where its other state is (not in the temp folder) ...
    assert [p.name.split("-")[2] for p in (out / "_emodist" / "keys").iterdir()] == [str(proc.pid)]
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "already done, skipped" in res.stdout
    assert not list((out / "_emodist" / "keys").iterdir())  # ... and the rerun removed it: nothing grows
    after = rows_by_clip(out)
    # ids: paths under input.root; the bad file lies outside it, so its id is its whole path
    assert sorted(after) == sorted(relative_id(u, str(clips_dir)) for u in uris)
    assert all(len(v) == 1 for v in after.values()), {k: v for k, v in after.items() if len(v) != 1}
    assert after[relative_id(str(bad_files["text"]), str(clips_dir))] == ["failure"]
