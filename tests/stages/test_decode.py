"""The decode stage: bad clips fail alone, tar bytes go no further than here."""
import numpy as np

from emodist import schema as col
from emodist.config import load_config
from emodist.decoders.pyav import decode_clip
from emodist.stages.decode import DecodeStage
from tests.conftest import stage_rows


def test_stage_marks_bad_clips_and_keeps_good_ones(clips_dir, bad_files):
    stage = DecodeStage(load_config(None, ["mode=sparse"]))
    uris = [str(clips_dir / "clip_00000.mp4"), str(bad_files["text"]), str(clips_dir / "clip_00003.mp4")]
    batch = {col.CLIP_ID: np.array(["a", "b", "c"], dtype=object), col.URI: np.array(uris, dtype=object)}
    out = stage(batch)
    rows = stage_rows(out)
    assert sorted(rows) == ["a", "b", "c"] and [rows[c][col.ERROR_STAGE] for c in "abc"] == ["", "decode", ""]
    assert rows["b"][col.ERROR_TYPE] == "ClipError"
    assert rows["b"][col.ERROR_MESSAGE].startswith(f"decode: {uris[1]}: not a readable video")
    assert rows["a"][col.FRAMES].shape[0] > 0 and rows["c"][col.FRAMES].shape[0] > 0
    assert list(out[col.CLIP_ID]) == ["a", "", "c"]  # the failed clip's slot holds its carrier row
    assert (out["t_decode_s"] > 0).all()


def test_stage_decodes_bytes_and_drops_them(clips_dir):
    stage = DecodeStage(load_config(None, ["mode=sparse"]))
    data = (clips_dir / "clip_00000.mp4").read_bytes()
    batch = {col.CLIP_ID: np.array(["a", "b", "c", "d"], dtype=object),
             col.URI: np.array(["s.tar#a.mp4", str(clips_dir / "missing.mp4"), "s.tar#c.mp4",
                                str(clips_dir / "clip_00000.mp4")], dtype=object),
             # a column of nulls comes back as NaNs once an operator has rebuilt the block
             "data": np.array([data, None, b"junk", np.float32("nan")], dtype=object)}
    out = stage(batch)
    assert "data" not in out
    rows = stage_rows(out)
    assert [rows[c][col.ERROR_STAGE] for c in "abcd"] == ["", "decode", "decode", ""]
    assert len(out[col.CLIP_ID]) == 3  # two failures, one carrier row
    assert "not found: no such file or object" in rows["b"][col.ERROR_MESSAGE]
    assert rows["b"][col.ERROR_TYPE] == "ClipError"
    ref = decode_clip(str(clips_dir / "clip_00000.mp4"), load_config(None, ["mode=sparse"]))[col.FRAMES]
    np.testing.assert_array_equal(out[col.FRAMES][0], ref)


def test_a_local_clip_refused_by_permissions_says_so_not_credentials():
    from emodist.stages.decode import clip_error

    # Tests run as root, whom mode bits never refuse: the error the file system would give.
    err = clip_error(PermissionError(13, "Permission denied", "/data/a.mp4"), "/data/a.mp4")
    assert str(err) == "permission denied; make it readable by this user"
