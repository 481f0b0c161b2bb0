"""The probe shared by the decoders: what a file that is not a video is called."""
import numpy as np
import pytest

from emodist import schema as col
from emodist.config import load_config
from emodist.stages.decode import DecodeStage
from tests.conftest import stage_rows


@pytest.mark.parametrize("fmt, kind", [("PNG", "PNG"), ("JPEG", "JPEG")])
def test_an_image_renamed_mp4_is_called_an_image_in_its_own_failure_row(tmp_path, clips_dir, fmt, kind):
    from PIL import Image

    img = tmp_path / "photo.mp4"  # an image with a video's suffix: FFmpeg opens it as png_pipe / jpeg_pipe
    Image.new("RGB", (64, 48), (200, 30, 30)).save(img, format=fmt)
    stage = DecodeStage(load_config(None, ["mode=sparse"]))
    uris = [str(img), str(clips_dir / "clip_00000.mp4")]
    rows = stage_rows(stage({col.CLIP_ID: np.array(["img", "ok"], dtype=object), col.URI: np.array(uris, dtype=object)}))
    assert rows["ok"][col.ERROR_STAGE] == ""  # one clip's failure, never the run's
    assert rows["img"][col.ERROR_TYPE] == "ClipError"
    assert rows["img"][col.ERROR_MESSAGE] == (
        f"decode: {img}: a {kind} image, not a video (renamed?); remove it, or convert it to a video, "
        "or put a clip's images in a folder of their own (a frame folder)"
    )
    assert "no duration" not in rows["img"][col.ERROR_MESSAGE]
