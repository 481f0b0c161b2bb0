"""`python -m benchmarks`: its exit status says which section stopped or which target was
missed, and every section runs at its smallest sizes and prints its rows (not its speed),
so a change that breaks a benchmark fails the test suite."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import __main__ as bench
from benchmarks import e2e
from benchmarks.common import Ratio, Results, Row

ROOT = Path(__file__).resolve().parents[2]


def test_a_stopped_section_a_section_without_rows_and_each_missed_target_fail_the_run():
    res = Results()
    ran: dict[str, str] = {}

    def stops(r):
        r.rows.append(Row("x", "s", "measured before it stopped", 1, 1.0))
        return None.__format__(".1f")  # the e2e section's old error

    bench._section(res, ran, "e2e", stops, res)
    bench._section(res, ran, "quiet", lambda r: None, res)
    bench._section(res, ran, "ok", lambda r: r.ratios.extend([
        Ratio("met", 1.0, ">= 0.8", True), Ratio("missed", 0.5, ">= 0.8", False),
        Ratio("unmeasured", float("nan"), ">= 0.8", None), Ratio("no target", 0.1)]), res)
    lines = bench.verdict(res, ran)
    assert lines[0].startswith("section e2e stopped: TypeError: unsupported format string passed to NoneType")
    assert "(at test_smoke.py:" in lines[0]
    assert lines[1] == "section quiet printed no rows (see the notes)"
    assert lines[2:] == ["target not met: missed: 0.5 (target >= 0.8)",
                         "target not met: unmeasured: unmeasured (target >= 0.8)"]
    assert res.rows and any("section e2e stopped" in n for n in res.notes)  # what was measured is kept
    # the smoke run's speeds mean nothing: only stopped sections and missing rows count there
    assert bench.verdict(res, ran, targets=False) == lines[:2]
    assert bench.verdict(Results(ratios=[Ratio("met", 1.0, ">= 0.8", True)]), {"ok": ""}) == []


def test_each_targeted_ratio_is_drawn_as_a_bar_against_its_target():
    from benchmarks.common import markdown, target_bars, text_table

    res = Results(ratios=[Ratio("long run / bound", 0.94, ">= 0.8", True), Ratio("memory 10N / N", 1.3, "<= 1.10", False),
                          Ratio("skips/s at 1M", 25107.0, ">= 20,000", True), Ratio("no target", 0.5),
                          Ratio("unmeasured", float("nan"), ">= 0.8", None)])
    lines = target_bars(res, width=30).splitlines()
    assert len(lines) == 4  # a header and the three ratios with a value and a number as target
    bars = {line[:60].strip(): line[61:91] for line in lines[1:]}
    assert set(bars) == {"long run / bound", "memory 10N / N", "skips/s at 1M"}
    for name, value, target in (("long run / bound", 0.94, 0.8), ("memory 10N / N", 1.3, 1.1),
                                ("skips/s at 1M", 25107.0, 20000.0)):
        bar = bars[name]
        assert bar.index("|") == round(target * 30 / (1.5 * target)) == 20  # the target at 2/3 of the width
        assert bar.count("#") == round(value * 30 / (1.5 * target)) - (value >= target), (name, bar)
    assert lines[2].endswith("NO") and lines[1].endswith("yes")
    assert target_bars(res) in text_table(res) and target_bars(res) in markdown(res)


def test_the_e2e_section_times_the_drivers_commits_and_refuses_to_measure_nothing(monkeypatch):
    from emodist import pipeline
    from emodist.output import commit

    with e2e.batch_times() as times:
        assert issubclass(pipeline.Committer, commit.Committer) and pipeline.Committer is not commit.Committer
    assert pipeline.Committer is commit.Committer and times == []
    monkeypatch.delattr(pipeline, "Committer")
    with pytest.raises(RuntimeError, match="emodist.pipeline.Committer.add"):
        with e2e.batch_times():
            pass


@pytest.mark.slow
def test_every_section_runs_at_its_smallest_sizes_and_prints_its_rows(tmp_path):
    out = tmp_path / "smoke.json"
    cmd = [sys.executable, "-m", "benchmarks", "--smoke", "--sections", "decode,e2e,model,rows", "--out", str(out)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-3000:]
    assert "benchmark passed: every section ran" in res.stdout
    found = json.loads(out.read_text())
    assert not [n for n in found["notes"] if "stopped" in n], found["notes"]
    cases = {(r["section"], r["case"]) for r in found["rows"]}
    for section, case in [("decode", "emodist decode_clip (msce, RGB 224)"),
                          ("ray", "emodist Ray: listing -> DecodeStage, 2 actors"),
                          ("decode", "decode_clip after it (emodist.decoders)"),
                          ("e2e", "stage alone: DecodeStage (in process)"),
                          ("e2e", "pipeline.run, 20 clips, object store budget 128 MiB"),
                          ("memory", "peak RSS during pipeline.run, 20 clips, budget 128 MiB"),
                          ("model", "DescribeLabelStage (async, per clip)"),
                          ("rows", "after 40: resume skips (whole run)")]:
        assert (section, case) in cases, (section, case, sorted(cases))
    ratios = " | ".join(q["name"] for q in found["ratios"])
    for name in ("emodist decode+plan / decoder limit for the frames the plan needs",
                 "decode after / before the input-layer change",
                 "e2e long-run rate (20 clips, after the first rows) / bound",
                 "memory driver RSS, budget 128 MiB: peak at 20 / at 2 clips",
                 "new stage / engine bound", "resume skipped clips/s beyond start-up (40)"):
        assert name in ratios, (name, ratios)
    # every printed row is in the console's table too
    assert "pipeline.run, 20 clips, object store b" in res.stdout
