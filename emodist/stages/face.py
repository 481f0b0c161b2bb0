"""Face stage: the largest face per frame, a stable crop across the clip (MTCNN).

A clip with no face on any frame fails with reason `no_face`, or, with
`face.on_missing=flag`, goes on uncropped with `face_ratio` 0 so it can be filtered.
"""
from __future__ import annotations

import numpy as np

from emodist import schema as col
from emodist.config import Config
from emodist.stages.base import Batch, Stage, mark_failed, object_column, set_torch_threads


class FaceStage(Stage):
    name = "face"
    required = {col.CLIP_ID: "str", col.URI: "str", col.FRAMES: "uint8 (N,H,W,3)"}

    def __init__(self, cfg: Config):
        from emodist.models.face import FaceCropper

        self.cfg = cfg
        set_torch_threads(cfg.face.num_cpus)
        self.cropper = FaceCropper(margin=cfg.face.margin, out_size=cfg.face.size)

    def process(self, batch: Batch, rows: np.ndarray) -> Batch:
        from emodist.models.face import NoFaceError

        n = len(batch[col.CLIP_ID])
        frames = list(batch[col.FRAMES])
        ratio = np.full(n, np.nan)
        for i in rows:
            try:
                result = self.cropper.crop_clip(frames[i])
                ratio[i] = result.face_ratio
                if result.face_ratio == 0:
                    if self.cfg.face.on_missing == "fail":
                        raise NoFaceError(
                            "no_face: no face found in any sampled frame; check the clip, or set "
                            "face.on_missing=flag to label it on the whole frame"
                        )
                    continue  # flagged: whole frames, face_ratio 0
                frames[i] = result.crops
            except Exception as exc:  # noqa: BLE001 - one clip fails alone
                mark_failed(batch, int(i), self.name, exc)
        batch[col.FRAMES] = object_column(frames)
        batch[col.FACE_RATIO] = ratio
        return batch
