"""Frames at the model's size: turned upright by the clip's display matrix first."""
import av
import numpy as np
import pytest

from emodist import schema as col
from emodist.config import load_config
from emodist.decoders.pyav import decode_clip


def write_rotated(path, degrees, width=64, height=32):
    """A landscape-stored clip (as phones store portrait video) with a white block in its
    stored top-left corner and a display matrix rotating it `degrees` counter-clockwise."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.set_display_rotation(degrees)
        img = np.full((height, width, 3), 100, np.uint8)  # gray: told apart from the black bars
        img[:8, :8] = 255
        for _ in range(30):
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def bright(img):
    """(rows, cols) of the pixels that hold the white block."""
    return np.argwhere(img.mean(axis=2) > 180)


# Where the stored top-left block is shown: -90 is a clockwise quarter turn (an iPhone's
# portrait clip), as FFmpeg's players apply the matrix.
@pytest.mark.parametrize("degrees, corner", [(0, "top-left"), (-90, "top-right"), (90, "bottom-left"),
                                             (180, "bottom-right")])
def test_frames_come_out_upright_by_the_display_matrix(tmp_path, degrees, corner):
    clip = write_rotated(tmp_path / f"rot{degrees}.mp4", degrees)
    with av.open(str(clip)) as c:
        assert next(c.decode(video=0)).rotation % 360 == degrees % 360  # what this PyAV reports
    cfg = load_config(None, ["mode=sparse", "decode.fit=pad", "decode.width=64", "decode.height=64"])
    frames = decode_clip(str(clip), cfg)[col.FRAMES]
    assert frames.shape[1:] == (64, 64, 3)
    img = frames[0]
    portrait = degrees in (90, -90)
    bars = (img[:, :14], img[:, 50:]) if portrait else (img[:14], img[50:])  # shown 32x64: side bars
    assert all(b.max() < 30 for b in bars)
    assert img[18:46, 18:46].min() > 60  # the picture fills the middle either way
    rows, cols = bright(img).T
    top, left = rows.mean() < 32, cols.mean() < 32
    assert corner == f"{'top' if top else 'bottom'}-{'left' if left else 'right'}", (rows.mean(), cols.mean())
    # scale 1 either way (64x32 or 32x64 into 64x64): the 8-pixel block stays 8 pixels
    assert rows.max() - rows.min() == pytest.approx(7, abs=1) and cols.max() - cols.min() == pytest.approx(7, abs=1)
