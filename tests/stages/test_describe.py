"""The describe stage (emodist/stages/describe.py) on real decoded frames with the tiny offline VLM."""
from emodist import schema as col
from emodist.models.engine import run_sync


def test_one_description_per_gap_and_keyframes_only_after(decoded, describe):
    cfg, batch = decoded
    n_gaps = [int(g.max()) + 1 for g in batch[col.FRAME_GAP]]
    out = run_sync(describe(dict(batch)))
    for i in range(3):
        assert len(out[col.DESCRIPTIONS][i]) == n_gaps[i] >= 1
        assert all(isinstance(d, str) and "\n" not in d for d in out[col.DESCRIPTIONS][i])
        assert [tuple(s) for s in out[col.GAP_SPANS][i]] == [(float(g), float(g + 1)) for g in range(n_gaps[i])]
        assert (out[col.FRAME_GAP][i] == -1).all()  # in-between frames stop here
        assert len(out[col.FRAMES][i]) == n_gaps[i] + 1
