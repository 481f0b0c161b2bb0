import av
import numpy as np
import pytest

from emodist import schema as col
from emodist.config import load_config
from emodist.stages.base import ClipError
from emodist.stages.decode import DecodeStage, decode_clip


def all_frames(path, width, height):
    """Reference: every frame, decoded and scaled the plain way."""
    with av.open(str(path)) as c:
        return [(f.time, f.to_ndarray(format="rgb24", width=width, height=height)) for f in c.decode(video=0)]


def test_picks_the_frame_on_screen_at_each_planned_time(clips_dir):
    cfg = load_config(None, ["decode.fit=stretch", "decode.width=96", "decode.height=96"])
    clip = clips_dir / "clip_00001.mp4"
    out = decode_clip(str(clip), cfg)
    ref = all_frames(clip, 96, 96)
    times = np.array([t for t, _ in ref])
    assert out[col.FRAMES].shape == (len(out[col.FRAME_TS]), 96, 96, 3)
    for img, t in zip(out[col.FRAMES], out[col.FRAME_TS]):
        shown = int(np.searchsorted(times, t + 1e-3, side="right") - 1)
        np.testing.assert_array_equal(img, ref[shown][1])
    kf = out[col.FRAME_TS][out[col.FRAME_GAP] == -1]
    np.testing.assert_allclose(kf, np.arange(len(kf)))
    assert out[col.NATIVE_FPS] == 25 and out[col.DURATION_S] == pytest.approx(times[-1] + 0.04, abs=0.05)


@pytest.mark.parametrize("fit", ["pad", "crop", "stretch"])
def test_frames_come_out_at_the_model_size(clips_dir, fit):
    cfg = load_config(None, [f"decode.fit={fit}", "decode.width=160", "decode.height=96", "mode=sparse"])
    frames = decode_clip(str(clips_dir / "clip_00002.mp4"), cfg)[col.FRAMES]
    assert frames.shape[1:] == (96, 160, 3) and frames.dtype == np.uint8
    if fit == "pad":  # a square clip letterboxed into a wide frame: black side bars
        assert frames[:, :, :20].max() == 0 and frames[:, :, 40:120].max() > 0


@pytest.mark.parametrize(
    "name, needle",
    [("zero", "empty file (0 bytes)"), ("text", "not a readable video"),
     ("cut_index", "not a readable video"), ("cut_frames", "truncated: frames stop at")],
)
def test_bad_files_raise_clip_errors_that_say_what_is_wrong(bad_files, name, needle):
    with pytest.raises(ClipError) as e:
        decode_clip(str(bad_files[name]), load_config())
    assert needle in str(e.value)


def test_stage_marks_bad_clips_and_keeps_good_ones(clips_dir, bad_files):
    stage = DecodeStage(load_config(None, ["mode=sparse"]))
    uris = [str(clips_dir / "clip_00000.mp4"), str(bad_files["text"]), str(clips_dir / "clip_00003.mp4")]
    batch = {col.CLIP_ID: np.array(["a", "b", "c"], dtype=object), col.URI: np.array(uris, dtype=object)}
    out = stage(batch)
    assert list(out[col.ERROR_STAGE]) == ["", "decode", ""]
    assert out[col.ERROR_TYPE][1] == "ClipError"
    assert out[col.ERROR_MESSAGE][1].startswith(f"decode: {uris[1]}: not a readable video")
    assert out[col.FRAMES][0].shape[0] > 0 and out[col.FRAMES][1].shape[0] == 0
    assert list(out[col.CLIP_ID]) == ["a", "b", "c"]
    assert (out["t_decode_s"] > 0).all()
