"""End to end: the real Ray pipeline on synthetic clips and bad files, through the CLI."""
import json

import numpy as np
import pyarrow.dataset as pads
import pytest
from typer.testing import CliRunner

from emodist import schema as col
from emodist.cli import app
from emodist.io.detect import list_clips
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

    from emodist import carry
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
