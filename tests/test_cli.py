"""The command line's own commands: --version and `emodist config`."""
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
