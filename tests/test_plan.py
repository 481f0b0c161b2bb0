import numpy as np
import pytest

from emodist.config import PlanConfig
from emodist.plan import KEYFRAME, make_plan


def test_msce_default_keyframes_every_second_and_four_inbetween_per_gap():
    plan = make_plan("msce", PlanConfig(), duration_s=3.5, native_fps=25)
    np.testing.assert_allclose(plan.keyframe_ts_s, [0, 1, 2, 3])
    assert plan.n_gaps == 3
    for g in range(3):
        np.testing.assert_allclose(plan.ts_s[plan.gap == g], g + np.array([0.25, 0.5, 0.75, 1.0]))
    assert plan.gap_spans_s() == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
    assert np.all(np.diff(plan.ts_s) >= 0)


def test_sparse_and_dense():
    sparse = make_plan("sparse", PlanConfig(sparse_fps=2), 2.0, 25)
    np.testing.assert_allclose(sparse.ts_s, [0, 0.5, 1, 1.5])
    assert np.all(sparse.gap == KEYFRAME) and sparse.n_gaps == 0
    dense = make_plan("dense", PlanConfig(dense_max_frames=1000), 2.0, 25)
    assert len(dense.ts_s) == 50  # every frame
    thinned = make_plan("dense", PlanConfig(dense_max_frames=10), 2.0, 25)
    assert len(thinned.ts_s) == 10 and thinned.ts_s[0] == 0 and thinned.ts_s[-1] == pytest.approx(49 / 25)


def test_long_clips_keep_the_keyframe_budget_and_scale_the_gaps():
    plan = make_plan("msce", PlanConfig(max_keyframes=4), 20.0, 25)
    np.testing.assert_allclose(plan.keyframe_ts_s, [0, 5, 10, 15])
    np.testing.assert_allclose(plan.ts_s[plan.gap == 0], [1.25, 2.5, 3.75, 5.0])


def test_short_clip_has_one_keyframe_and_no_gap():
    plan = make_plan("msce", PlanConfig(), 0.6, 25)
    np.testing.assert_allclose(plan.ts_s, [0.0])
    with pytest.raises(ValueError, match="positive"):
        make_plan("msce", PlanConfig(), 0.0, 25)
