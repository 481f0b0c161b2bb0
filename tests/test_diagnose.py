import json

import numpy as np
import pytest

from emodist.config import PlanConfig
from emodist.diagnose import diagnose, variants
from emodist.plan import make_plan
from emodist.decoders.frames import shuffled
from tests.conftest import tiny_config


def test_shuffle_permutes_images_within_their_role_and_keeps_content():
    plan = make_plan("msce", PlanConfig(), 3.0, 25)
    frames = np.arange(len(plan.ts_s), dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    out = shuffled(frames, plan.gap, seed=0, key="clip")
    assert not np.array_equal(out, frames)
    for g in np.unique(plan.gap):
        sel = plan.gap == g
        assert sorted(out[sel, 0, 0, 0]) == sorted(frames[sel, 0, 0, 0])
    np.testing.assert_array_equal(out, shuffled(frames, plan.gap, seed=0, key="clip"))


def test_rate_variants_set_the_inbetween_plan():
    vs = {v.name: v for v in variants(tiny_config(), (1, 4, 8), shuffle=True)}
    assert vs["shuffled"].cfg.plan.shuffle and not vs["original"].cfg.plan.shuffle
    assert (vs["rate=8fps"].cfg.plan.inbetween_per_gap, vs["rate=8fps"].cfg.plan.inbetween_step_s) == (8, 0.125)
    assert vs["rate=4fps"].cfg.plan == PlanConfig()  # the paper's default is the 4 fps point


@pytest.mark.slow
def test_diagnose_runs_variants_and_plots(ray_local, tiny_vlm, clips_dir, tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("uri,label\n" + "".join(f"{clips_dir}/clip_0000{i}.mp4,sad\n" for i in range(2)))
    report = diagnose(tiny_config(), str(m), str(tmp_path / "d"), rates_fps=(1,), bootstrap=20)
    names = [r["variant"] for r in report["variants"]]
    assert names == ["original", "shuffled", "rate=1fps"]
    assert all(r["n"] == 2 and 0 <= r["macro_f1"] <= 1 for r in report["variants"])
    assert json.loads((tmp_path / "d" / "diagnose.json").read_text())["variants"][1]["shuffle"] is True
    for png in ("shuffle.png", "rate_sweep.png"):
        assert (tmp_path / "d" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
