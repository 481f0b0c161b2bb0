"""The command line's own commands: --version, `emodist config`, `emodist show` and the run table."""
import importlib.metadata as md

from typer.testing import CliRunner

from emodist.cli import app
from emodist.config import config_keys, load_config


def cli(*args):
    return CliRunner().invoke(app, list(args))


def test_version_prints_the_installed_version():
    res = cli("--version")
    assert res.exit_code == 0 and res.output.strip() == f"emodist {md.version('emodist')}"


def test_config_lists_every_key_with_its_default_and_description():
    res = cli("config")
    assert res.exit_code == 0
    keys = config_keys()
    assert len(keys) > 50 and all(f"\n{k} = " in "\n" + res.output for k, _, _ in keys)
    assert "plan.keyframe_interval_s = 1.0\n    Seconds between keyframes" in res.output
    # every key `config` prints is one that --set takes
    assert all(load_config(None, [f"{k}={d}"]) for k, d, _ in keys if d not in ("None", "'**'") and "[" not in d)


def test_config_shows_what_a_set_changes_and_refuses_a_bad_value():
    res = cli("config", "--set", "decode.width=336")
    default = dict((k, d) for k, d, _ in config_keys())["decode.width"]
    assert default != "336" and f"decode.width = 336 (default {default})" in res.output
    bad = cli("config", "--set", "plan.keyframe_interval_s=.inf")
    assert bad.exit_code == 2 and "plan.keyframe_interval_s" in bad.output and "finite" in bad.output


def _run_folder(tmp_path):
    """A run's output as `emodist run` writes it: a prediction part and a failure part."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    (out / "predictions").mkdir(parents=True)
    (out / "failures").mkdir()
    names = ["happy", "sad", "neutral"]
    pq.write_table(pa.table({
        "clip_id": ["a/clip_1", "b/clip_1"], "ref_label": ["sad", ""], "label": ["sad", "happy"],
        "label_names": [names, names], "probs": [[0.2, 0.7, 0.1], [0.6, 0.3, 0.1]],
        "descriptions": [["steady sad (1.0)", "happy rises to 0.80 at 1.75 s"], ["steady happy (1.0)"]],
        "gap_spans_s": [[[0.0, 1.0], [1.0, 2.0]], [[0.0, 1.0]]],
    }), out / "predictions" / "part-0.parquet")
    pq.write_table(pa.table({"clip_id": ["c/broken"], "error_stage": ["decode"],
                             "error_message": ["decode: c/broken.mp4: not a readable video; re-encode it"]}),
                   out / "failures" / "part-0.parquet")
    return out


def test_show_prints_a_clips_timeline_one_line_per_gap_and_the_failures(tmp_path):
    out = _run_folder(tmp_path)
    res = cli("show", str(out), "--clip", "a/clip_1")
    assert res.exit_code == 0
    assert res.output.splitlines() == [
        "a/clip_1: sad (sad 0.70, happy 0.20, neutral 0.10), truth sad",
        "    0.00-  1.00 s  steady sad (1.0)",
        "    1.00-  2.00 s  happy rises to 0.80 at 1.75 s",
    ]
    res = cli("show", str(out))
    assert "b/clip_1: happy (happy 0.60, sad 0.30, neutral 0.10)" in res.output
    assert "failed (1):\n  c/broken [decode]: decode: c/broken.mp4: not a readable video; re-encode it" in res.output
    res = cli("show", str(out), "--clip", "nope")
    assert res.exit_code == 2
    assert f"{out}: no prediction row for clip 'nope'; `emodist show {out}` lists the clips" in res.output


def test_the_run_table_is_one_line_a_clip_within_the_terminal(tmp_path, monkeypatch, capsys):
    from emodist.cli import _print_table

    monkeypatch.setenv("COLUMNS", "60")
    _run_folder(tmp_path)
    monkeypatch.chdir(tmp_path)  # the folder as a user names it: OUT relative to here
    _print_table("out", limit=1)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(len(s) <= 60 for s in lines)
    assert lines[1].startswith("a/clip_1") and "sad 0.70" in lines[1]
    assert lines[2] == "... and 1 more in out/predictions/ (emodist show out)"
