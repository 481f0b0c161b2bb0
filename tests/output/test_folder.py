"""A run's output folder as one object (output/folder.py): its layout, its parts, and its
rows read by config. A folder that `run --new-config` filled with rows of two configs is
refused by every reader (`eval`, `show`, `finetune --descriptions-from`) in one line that
names both hashes, their row counts and `--config-hash`; with it, each reads that
config's rows and no other."""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from emodist import schema as col
from emodist.cli import _top, app
from emodist.config import Config, ConfigError, load_config
from emodist.output.folder import (FAILURES, PREDICTIONS, SUMMARY, ConfigChoice, RunFolder, choose_config,
                                   log_path)
from tests.conftest import SMALL

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--config", str(ROOT / "configs" / "tiny-vlm.yaml"), "--set", "mode=sparse",
        *[a for s in SMALL for a in ("--set", s)]]


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def test_choosing_a_config_names_every_hash_with_its_rows_and_the_option():
    assert choose_config("out", {"aaa": 3}, None) == "aaa"
    assert choose_config("out", {}, None) is None  # rows without a config_hash
    assert choose_config("out", {"aaa": 3, "bbb": 5}, "aaa") == "aaa"
    with pytest.raises(ConfigChoice) as mixed:
        choose_config("out", {"aaa": 3, "bbb": 5}, None)
    assert str(mixed.value) == ("out: rows of 2 configs side by side (run --new-config): bbb (5 rows), aaa (3 rows); "
                                "pick one with --config-hash HASH")
    with pytest.raises(ConfigChoice, match=r"no rows with config_hash 'ccc'; it holds aaa \(3 rows\)"):
        choose_config("out", {"aaa": 3}, "ccc")


def _part(path: Path, rows: list[dict], schema: pa.Schema) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def test_parts_are_committed_names_only_and_rows_are_read_by_config(tmp_path):
    pred = [{col.CLIP_ID: f"c{i}", col.LABEL: "happy", col.CONFIG_HASH: h} for i, h in enumerate("aab")]
    _part(tmp_path / PREDICTIONS / "part-x-00000.parquet", pred[:2], col.PREDICTIONS)
    _part(tmp_path / PREDICTIONS / "part-x-00001.parquet", pred[2:], col.PREDICTIONS)
    _part(tmp_path / PREDICTIONS / ".part-x-00002.parquet.tmp", pred, col.PREDICTIONS)  # being written
    _part(tmp_path / FAILURES / "part-x-00000.parquet",
          [{col.CLIP_ID: "f0", col.CONFIG_HASH: "a"}, {col.CLIP_ID: "f1", col.CONFIG_HASH: "b"}], col.FAILURES)
    _part(tmp_path / FAILURES / "_retried" / "part-y-00000.parquet", [{col.CLIP_ID: "old"}], col.FAILURES)
    folder = RunFolder(str(tmp_path), Config())
    assert [os.path.basename(p) for p in folder.parts()] == ["part-x-00000.parquet", "part-x-00001.parquet"]
    assert len(folder.committed_parts()) == 3 and folder.is_run()
    assert folder.config_rows() == {"a": 2, "b": 1}
    with pytest.raises(ConfigChoice, match=r"a \(2 rows\), b \(1 rows\); pick one with --config-hash"):
        folder.read()
    table, chosen = folder.read(columns=[col.CLIP_ID], config_hash="b")
    assert chosen == "b" and table.column_names == [col.CLIP_ID] and table.column(0).to_pylist() == ["c2"]
    assert folder.failed_ids("a") == ["f0"] and folder.failed_ids(None) == ["f0", "f1"]
    assert folder.read(FAILURES, config_hash="c", missing_ok=True)[0].num_rows == 0
    folder.write_summary({"labeled": 3})
    assert folder.read_summary() == {"labeled": 3} and (tmp_path / SUMMARY).exists()
    assert log_path(str(tmp_path), "r1") == f"{tmp_path}/_emodist/logs/run-r1.log"


@pytest.fixture(scope="module")
def two_configs(ray_local, tiny_vlm, clips_dir, tmp_path_factory):
    """An output holding the rows of a sparse run and, beside them, of a dense one."""
    tmp = tmp_path_factory.mktemp("two-configs")
    m = tmp / "m.csv"
    m.write_text("uri,label\n" + "".join(f"{clips_dir}/clip_0000{i}.mp4,{'happy' if i % 2 else 'sad'}\n"
                                         for i in range(3)))
    out = tmp / "out"
    first = cli("run", "-i", str(m), "-o", str(out), "--quiet", *TINY)
    assert first.exit_code == 0, first.output
    second = cli("run", "-i", str(m), "-o", str(out), "--quiet", *TINY, "--set", "mode=dense", "--new-config")
    assert second.exit_code == 0, second.output
    rows = pads.dataset(out / PREDICTIONS).to_table().to_pylist()
    by_mode = {mode: [r for r in rows if r[col.MODE] == mode] for mode in ("sparse", "dense")}
    assert all(len(v) == 3 for v in by_mode.values())
    hashes = {mode: v[0][col.CONFIG_HASH] for mode, v in by_mode.items()}
    assert len(set(hashes.values())) == 2
    return out, m, by_mode, hashes


def _refused(res, hashes) -> str:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    for h in hashes.values():
        assert f"{h} (3 rows)" in lines[0], lines[0]
    assert "--config-hash" in lines[0]
    return lines[0]


def test_eval_refuses_two_configs_and_scores_the_chosen_ones_rows(two_configs):
    from emodist.evaluate import evaluate

    out, m, by_mode, hashes = two_configs
    _refused(cli("eval", "-p", str(out), "-l", str(m), "--bootstrap", "0"), hashes)
    for mode, h in hashes.items():
        res = cli("eval", "-p", str(out), "-l", str(m), "--bootstrap", "0", "--config-hash", h)
        assert res.exit_code == 0, res.output
        r = evaluate(str(out), str(m), label_set="dfew", bootstrap=0, config_hash=h)
        # each clip once (a mix counted the other config's row as a duplicate)
        assert r.n == 3 and r.problems["duplicate_prediction_ids"].count == 0
        want = sum(x[col.LABEL] == x[col.REF_LABEL] for x in by_mode[mode]) / 3
        assert r.war == pytest.approx(want), mode


def test_show_refuses_two_configs_and_shows_the_chosen_ones_rows(two_configs):
    out, _, by_mode, hashes = two_configs
    _refused(cli("show", str(out)), hashes)
    for mode, h in hashes.items():
        res = cli("show", str(out), "--config-hash", h, "--limit", "10")
        assert res.exit_code == 0, res.output
        ids = {r[col.CLIP_ID] for r in by_mode[mode]}
        heads = sorted(ln for ln in res.output.splitlines() if ln.split(": ", 1)[0] in ids)
        assert heads == sorted(f"{r[col.CLIP_ID]}: {r[col.LABEL]} ({_top(r)})"
                               + (f", truth {r[col.REF_LABEL]}" if r[col.REF_LABEL] else "") for r in by_mode[mode])


def test_finetune_refuses_descriptions_of_two_configs_and_reads_the_chosen_ones(two_configs, tmp_path):
    from emodist.finetune import examples

    out, m, by_mode, hashes = two_configs
    line = _refused(cli("finetune", "--train", str(m), "-o", str(tmp_path / "ft"), *TINY,
                        "--descriptions-from", str(out)), hashes)
    assert line.startswith("error: --descriptions-from ")
    assert not (tmp_path / "ft" / "examples").exists()  # refused before any clip was decoded
    cfg = load_config(ROOT / "configs" / "tiny-vlm.yaml", list(SMALL))
    with pytest.raises(ConfigError, match="side by side"):
        examples._descriptions_of(str(out), cfg)
    for mode, h in hashes.items():
        got = examples._descriptions_of(str(out), cfg, h)
        assert got == {r[col.CLIP_ID]: (r[col.DESCRIPTIONS] or [], r[col.GAP_SPANS] or []) for r in by_mode[mode]}
    assert by_mode["sparse"][0][col.GAP_SPANS] != by_mode["dense"][0][col.GAP_SPANS]  # the two do differ
