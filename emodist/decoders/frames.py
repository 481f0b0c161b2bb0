"""What every decoder returns, built in one place: frames at the model's size, their
planned times and gaps, the clip's duration and frame rate (`decoded_row`)."""
from __future__ import annotations

import numpy as np

from emodist import schema as col
from emodist.plan import FramePlan


def quarter_turns(frame) -> int:
    """Counter-clockwise quarter turns that stand a decoded frame upright: its display
    matrix's rotation (`frame.rotation`, FFmpeg's av_display_rotation_get), as FFmpeg's
    own players apply it. Phone clips shot upright are stored landscape with a matrix
    that turns them portrait; without it they reach the model sideways. Mirroring in the
    matrix is not applied."""
    try:
        degrees = frame.rotation
    except AttributeError:  # not a decoded av.VideoFrame
        return 0
    return int(round((degrees or 0) / 90.0)) % 4


def fit_frame(frame, width: int, height: int, fit: str, scaler=None) -> np.ndarray:
    """RGB uint8 (height, width, 3) from an av.VideoFrame, turned upright by its display
    matrix (quarter_turns), aspect handled by `fit`.
    Pass one `av.video.reformatter.VideoReformatter` for all frames of a clip: FFmpeg's
    scaler context is then built once per clip, not per frame (about 2x at 224 px)."""
    turns = quarter_turns(frame)
    # The frame as it is shown: a quarter turn swaps its width and height.
    fw, fh = (frame.height, frame.width) if turns % 2 else (frame.width, frame.height)
    if fit == "stretch":
        w, h = width, height
    else:
        scale = (min if fit == "pad" else max)(width / fw, height / fh)
        w = max(2, int(round(fw * scale)))
        h = max(2, int(round(fh * scale)))
    # Scaled as stored (the scaler does not rotate), then turned: rotating the small image
    # costs nothing next to rotating the full-size one.
    sw, sh = (h, w) if turns % 2 else (w, h)
    if scaler is not None:
        # threads=1: a scaler thread pool per frame costs more than it saves at model sizes.
        img = scaler.reformat(frame, width=sw, height=sh, format="rgb24", threads=1).to_ndarray()
    else:
        img = frame.to_ndarray(format="rgb24", width=sw, height=sh)
    if turns:
        img = np.ascontiguousarray(np.rot90(img, turns))
    if fit == "stretch":
        return img
    if fit == "crop":
        y0, x0 = (h - height) // 2, (w - width) // 2
        return np.ascontiguousarray(img[y0 : y0 + height, x0 : x0 + width])
    out = np.zeros((height, width, 3), dtype=np.uint8)
    y0, x0 = (height - h) // 2, (width - w) // 2
    out[y0 : y0 + h, x0 : x0 + w] = img[:height, :width]
    return out


def shuffled(frames: np.ndarray, gap: np.ndarray, seed: int, key: str) -> np.ndarray:
    """The frames with keyframe images permuted among keyframe slots and in-between
    images within their gap: same content, same timestamps, scrambled order."""
    import zlib

    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    out = frames.copy()
    for g in np.unique(gap):
        idx = np.flatnonzero(gap == g)
        out[idx] = frames[rng.permutation(idx)]
    return out


def decoded_row(frames: np.ndarray, plan: FramePlan, duration: float, fps: float, cfg, uri: str) -> dict:
    """The decode columns of one clip's row, whatever decoded it."""
    if cfg.plan.shuffle:
        frames = shuffled(frames, plan.gap, seed=cfg.run.seed, key=uri)
    return {col.FRAMES: frames, col.FRAME_TS: plan.ts_s, col.FRAME_GAP: plan.gap,
            col.DURATION_S: duration, col.NATIVE_FPS: fps}
