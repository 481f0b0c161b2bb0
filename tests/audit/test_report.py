"""`emodist audit` from the command line: the report folder, the terminal summary, and
bad input refused with exit 2 and one line."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from emodist.audit import synthetic
from emodist.cli import app
from emodist.labels import DFEW


def test_cli_writes_the_report_and_points_at_the_page(tmp_path):
    case = synthetic.make_case(400, DFEW, seed=4)
    synthetic.write_predictions(tmp_path / "out", case, DFEW)
    synthetic.write_manifest(tmp_path / "man.parquet", case, DFEW)
    run = CliRunner().invoke(app, ["audit", "-p", str(tmp_path / "out"), "-l", str(tmp_path / "man.parquet"),
                                   "--report", str(tmp_path / "rep"), "--top", "10", "--no-frames"])
    assert run.exit_code == 0, run.output
    s = json.loads((tmp_path / "rep" / "audit.json").read_text())
    assert f"{s['counts']['issues']} likely label errors (cleanlab confident learning)" in run.output
    assert f"review page: {tmp_path / 'rep' / 'index.html'}" in run.output
    assert s["counts"]["on_page"] == 10 and s["settings"]["top"] == 10


def test_two_configs_and_duplicate_ids(tmp_path):
    case = synthetic.make_case(300, DFEW, seed=4)
    synthetic.write_predictions(tmp_path / "out", case, DFEW)
    synthetic.write_predictions(tmp_path / "out", case, DFEW, config_hash="second000000000", rows=slice(0, 50))
    (tmp_path / "man.csv").write_text("clip_id,uri,label\n" + "".join(
        f"{cid},/data/clips/{cid}.mp4,{DFEW[case.original[i]]}\n" for i, cid in enumerate(case.ids))
        + f"{case.ids[0]},/data/clips/{case.ids[0]}.mp4,happy\n")
    args = ["audit", "-p", str(tmp_path / "out"), "-l", str(tmp_path / "man.csv"), "--report", str(tmp_path / "rep"),
            "--no-frames"]
    bad = CliRunner().invoke(app, args)
    assert bad.exit_code == 2
    assert "synthetic0000000 (300 rows), second000000000 (50 rows)" in bad.output and "--config-hash" in bad.output
    ok = CliRunner().invoke(app, args + ["--config-hash", "second000000000"])
    assert ok.exit_code == 0, ok.output
    s = json.loads((tmp_path / "rep" / "audit.json").read_text())
    assert s["config_hash"] == "second000000000" and s["counts"]["predictions"] == 50
    assert s["problems"]["no_prediction"]["count"] == 250
    assert s["problems"]["manifest_duplicate_ids"] == {"count": 1, "examples": [case.ids[0]]}


def test_predictions_and_labels_on_s3(tmp_path, s3):
    """Storage settings come from the config, as for `run` and `eval`."""
    from emodist.audit.apply import apply_decisions
    from emodist.audit.report import audit
    from tests.conftest_s3 import DATA_BUCKET, OUT_BUCKET

    case = synthetic.make_case(300, DFEW, seed=6)
    synthetic.write_predictions(tmp_path / "out", case, DFEW)
    synthetic.write_manifest(tmp_path / "man.csv", case, DFEW)
    s3.admin.put(str(tmp_path / "out" / "predictions"), f"{DATA_BUCKET}/audit-run/predictions", recursive=True)
    s3.admin.put(str(tmp_path / "man.csv"), f"{DATA_BUCKET}/audit-run/man.csv")
    cfg = s3.config()
    s = audit(f"s3://{DATA_BUCKET}/audit-run", f"s3://{DATA_BUCKET}/audit-run/man.csv", tmp_path / "rep", cfg,
              top=5, with_frames=False)
    local = audit(str(tmp_path / "out"), str(tmp_path / "man.csv"), tmp_path / "rep2", cfg, top=5, with_frames=False)
    assert s["counts"] == local["counts"] and s["counts"]["scored"] == 300
    (tmp_path / "d.csv").write_text(f"clip_id,uri,original,decision,decided_label\n{case.ids[0]},x,happy,other,fear\n")
    a = apply_decisions(str(tmp_path / "d.csv"), f"s3://{DATA_BUCKET}/audit-run/man.csv",
                        f"s3://{OUT_BUCKET}/audit-run/new.csv", cfg, DFEW)
    assert a.rows == 300 and b"review:other" in s3.admin.cat_file(f"{OUT_BUCKET}/audit-run/new.csv")
