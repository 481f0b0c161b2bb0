"""Clips stored as folders of images, decoded by the same plan as videos."""
import numpy as np
import pytest
from tests.conftest_s3 import solid_frames, write_frame_folder

from emodist import schema as col
from emodist.config import load_config
from emodist.decoders import decode
from emodist.decoders.folders import decode_folder as decode_frames
from emodist.decoders.pyav import decode_clip
from emodist.errors import ClipError


def test_frame_folder_picks_the_image_on_screen_at_each_planned_time(tmp_path):
    folder = solid_frames(tmp_path / "clip", 60)  # 2.4 s at 25 fps; 10.png..60.png sort after 9.png
    cfg = load_config(None, ["decode.fit=stretch", "decode.width=16", "decode.height=16"])
    out = decode_frames(str(folder), cfg)
    assert out[col.DURATION_S] == pytest.approx(60 / 25) and out[col.NATIVE_FPS] == 25
    expect = np.floor((out[col.FRAME_TS] + 1e-3) * 25).astype(int)
    assert list(out[col.FRAMES][:, 8, 8, 0]) == list(expect)
    kf = out[col.FRAME_TS][out[col.FRAME_GAP] == -1]
    np.testing.assert_allclose(kf, [0.0, 1.0, 2.0])
    slow = decode_frames(str(folder), load_config(None, ["input.frame_folder_fps=10", "mode=sparse"]))
    assert slow[col.DURATION_S] == pytest.approx(6.0) and len(slow[col.FRAME_TS]) == 6


def test_frame_folder_resized_like_a_video(tmp_path, clips_dir):
    folder = tmp_path / "f"
    write_frame_folder(clips_dir / "clip_00002.mp4", folder, "png")
    for fit in ("pad", "crop"):
        cfg = load_config(None, [f"decode.fit={fit}", "decode.width=160", "decode.height=96", "mode=sparse"])
        frames = decode(str(folder), cfg)[0][col.FRAMES]
        video = decode_clip(str(clips_dir / "clip_00002.mp4"), cfg)[col.FRAMES]
        assert frames.shape == video.shape
        assert np.abs(frames.astype(int) - video.astype(int)).mean() < 3  # same picks, same fit


def test_frame_folder_with_an_unreadable_image_names_it(tmp_path):
    folder = solid_frames(tmp_path / "clip", 30, ext="jpg")
    (folder / "12.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    with pytest.raises(ClipError, match=r"unreadable image 12\.jpg"):
        decode_frames(str(folder), load_config(None, ["mode=dense"]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClipError, match="no video and no frame images"):
        decode(str(tmp_path / "empty"), load_config())


@pytest.mark.parametrize("override, needle", [
    ("input.max_frames=20", "holds 30 frames, over the limit input.max_frames = 20; raise input.max_frames"),
    ("input.max_duration_s=1", "over the limit input.max_duration_s = 1; raise input.max_duration_s"),
    ("input.max_width=16", "is 32x32, over the limit input.max_width x input.max_height = 16x4320"),
    ("input.max_file_mb=0.00001", "over the limit input.max_file_mb = 1e-05; raise input.max_file_mb"),
])
def test_frame_folder_limits(tmp_path, override, needle):
    folder = solid_frames(tmp_path / "clip", 30)
    with pytest.raises(ClipError) as e:
        decode_frames(str(folder), load_config(None, [override]))
    assert needle in str(e.value)
