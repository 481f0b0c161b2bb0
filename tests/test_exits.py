"""Exit statuses (emodist/exits.py): one mapping from error to status for `emodist run`,
`emodist finetune` and their `ray job submit` entrypoints (ray_jobs/)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from emodist.config import ConfigError
from emodist.exits import EXIT_NOT_STARTED, EXIT_STOPPED, exit_status
from emodist.output.lease import LeaseHeld
from emodist.pipeline import RunStopped, Terminated
from emodist.storage import SourceError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("exc, status", [
    (ConfigError("labels: unknown set"), EXIT_NOT_STARTED),
    (SourceError("input: not found"), EXIT_NOT_STARTED),
    (LeaseHeld("another run holds the output"), EXIT_NOT_STARTED),
    (RunStopped("an actor failed"), EXIT_STOPPED),
    (Terminated("stopped by SIGTERM"), EXIT_STOPPED),
    (KeyError("a bug"), None),
    (ValueError("a bug"), None),
])
def test_each_error_has_one_status(exc, status):
    assert exit_status(exc) == status


def job(name: str):
    spec = importlib.util.spec_from_file_location(f"job_{name}", ROOT / "ray_jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, source", [("relabel", "--input"), ("finetune", "--train")])
def test_the_ray_jobs_give_the_command_lines_statuses(name, source, tmp_path, capsys):
    """A config that does not load: one line, the status `emodist run`/`finetune` gives (2)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("labels: no-such-set\n")
    argv = ["--config", str(bad), source, str(tmp_path / "clips.csv"), "--output", str(tmp_path / "out")]
    assert job(name).main(argv) == EXIT_NOT_STARTED
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no-such-set" in err and len(err.strip().splitlines()) == 1


def test_a_bug_in_a_ray_job_raises_with_its_stack(tmp_path, monkeypatch):
    import emodist.pipeline

    def broken(*a, **k):
        raise KeyError("a bug")

    monkeypatch.setattr(emodist.pipeline, "run", broken)
    with pytest.raises(KeyError, match="a bug"):
        job("relabel").main(["--config", str(ROOT / "configs" / "tiny-vlm.yaml"), "--input", str(tmp_path / "in.csv"),
                             "--output", str(tmp_path / "out")])
