"""Face stage: the largest face per frame, a stable crop across the clip (MTCNN).

Which frames show a face travels on with the frames (`face_found`), so the describer
and labeler never read an expression into a frame without one. A clip with a face on
fewer than `face.min_face_share` of its frames (or none) fails with reason `no_face`,
or, with `face.on_missing=flag`, goes on with its `face_ratio` so it can be filtered; a
flagged clip with no face at all goes on uncropped, labeled on the whole frame.
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
        found = [np.zeros(0, bool)] * n
        least = self.cfg.face.min_face_share
        for i in rows:
            try:
                result = self.cropper.crop_clip(frames[i])
                ratio[i], found[i] = result.face_ratio, result.found
                if result.face_ratio == 0 or result.face_ratio < least:
                    if self.cfg.face.on_missing == "fail":
                        what = ("no face found in any sampled frame" if result.face_ratio == 0 else
                                f"a face in only {result.face_ratio:.0%} of the sampled frames "
                                f"(face.min_face_share={least:g})")
                        raise NoFaceError(
                            f"no_face: {what}; check the clip, or set face.on_missing=flag to label "
                            "it anyway" + (" on the whole frame" if result.face_ratio == 0 else
                                           " from its face frames, or lower face.min_face_share"))
                    if result.face_ratio == 0:
                        continue  # flagged: whole frames, face_ratio 0
                frames[i] = result.crops
            except Exception as exc:  # noqa: BLE001 - one clip fails alone
                mark_failed(batch, int(i), self.name, exc)
        batch[col.FRAMES] = object_column(frames)
        batch[col.FACE_RATIO] = ratio
        batch[col.FACE_FOUND] = object_column(found)
        return batch
