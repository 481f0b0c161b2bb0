"""The CPU decoder: the frame on screen at each planned time, at the model's size; the
non-reference frames no planned time picks left undecoded; bad files and limits."""
import av
import numpy as np
import pytest

from emodist import schema as col
from emodist.config import load_config
from emodist.decoders.pyav import decode_clip
from emodist.errors import ClipError


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


@pytest.mark.parametrize("mode", ["msce", "sparse", "dense"])
def test_skipping_unpicked_frames_changes_no_frame(clips_dir, fetched, mode):
    """decode.skip_unpicked leaves the non-reference frames no planned time picks
    undecoded: the same frames come out, with one FFmpeg thread or frame threads."""
    for clip in [*sorted(clips_dir.glob("*.mp4"))[:4], fetched["pexels_video"]]:
        for threads in (1, 2):
            base = [f"mode={mode}", f"decode.threads={threads}"]
            on = decode_clip(str(clip), load_config(None, base))
            off = decode_clip(str(clip), load_config(None, [*base, "decode.skip_unpicked=false"]))
            assert on.keys() == off.keys()
            for k in on:
                np.testing.assert_array_equal(np.asarray(on[k]), np.asarray(off[k]), err_msg=f"{clip.name} {threads} {k}")


def test_skipping_unpicked_frames_decodes_fewer(clips_dir, fetched):
    from emodist.plan import make_plan
    from emodist.decoders.pyav import decoded_frames

    cfg = load_config(None, [])
    for clip in (clips_dir / "clip_00001.mp4", fetched["pexels_video"]):
        decoded = {}
        for skip in (False, True):
            with av.open(str(clip)) as c:
                s = c.streams.video[0]
                plan = make_plan("msce", cfg.plan, float(s.duration * s.time_base), float(s.average_rate))
                decoded[skip] = sum(1 for _ in decoded_frames(c, s, plan.ts_s, skip))
        # x264's B-frames: about half the frames of both clips are non-reference.
        assert decoded[True] < 0.8 * decoded[False], (clip.name, decoded)


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


@pytest.mark.parametrize("override, needle", [
    ("input.max_file_mb=0.01", "over the limit input.max_file_mb = 0.01; raise input.max_file_mb to accept it"),
    ("input.max_width=100", "resolution 224x224 is over the limit input.max_width x input.max_height = 100x4320"),
    ("input.max_height=200", "over the limit input.max_width x input.max_height = 7680x200; raise input.max_width / input.max_height"),
    ("input.max_duration_s=1.5", "over the limit input.max_duration_s = 1.5; raise input.max_duration_s to accept it"),
    ("input.max_frames=30", "over the limit input.max_frames = 30; raise input.max_frames to accept it"),
])
def test_each_input_limit_fails_the_clip_before_decoding_and_names_the_key(clips_dir, override, needle):
    clip = str(clips_dir / "clip_00001.mp4")
    with pytest.raises(ClipError) as e:
        decode_clip(clip, load_config(None, [override]))
    assert needle in str(e.value)
    with pytest.raises(ClipError) as e:  # the same from in-memory bytes (tar members)
        decode_clip("s.tar#x.mp4", load_config(None, [override]), data=(clips_dir / "clip_00001.mp4").read_bytes())
    assert needle.split(";")[0].split(" = ")[0] in str(e.value)
