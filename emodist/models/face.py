"""Face detection (MTCNN) and a temporally stable face crop per clip.

The detector is MTCNN (Zhang et al. 2016) with the P/R/O-net weights shipped in the
`facenet-pytorch` 2.6.0 wheel (asset cache; see `emodist.assets`). The nets are small,
so they are re-implemented here with torch.nn.functional: no torchvision (its NMS), no
OpenCV, and no new pip dependency. The pipeline follows facenet-pytorch's
`detect_face`: image pyramid -> P-net proposals -> R-net refine -> O-net refine.

`FaceCropper.crop_clip` detects the largest face on (up to `max_detect_frames` evenly
spaced) frames, and halfway between two probes that disagree until the frame where
the face comes or goes is found; fills the other frames by linear interpolation in time, smooths the
box track with a running median, widens it into a square with a margin, and crops.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from emodist.errors import ClipError

from emodist import assets


class NoFaceError(ClipError):
    """No face in any frame of a clip; `reason` is the failure code for the dead letters."""

    reason = "no_face"


@dataclass(slots=True)
class CropResult:
    crops: np.ndarray  # uint8 (N, S, S, 3)
    boxes: np.ndarray  # float32 (N, 4) x0, y0, x1, y1 of the square crop, in frame pixels
    found: np.ndarray  # bool (N,): a face was detected on this frame (or its nearest probe)
    face_ratio: float  # share of frames with a face (found.mean()); 0 means no face in the clip

    def __repr__(self) -> str:
        n, size = len(self.crops), self.crops.shape[1:3]
        return f"CropResult(n={n}, size={size}, face_ratio={self.face_ratio:.2f})"


# --- MTCNN -----------------------------------------------------------------------------

def _nms(boxes: np.ndarray, scores: np.ndarray, thresh: float, mode: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (MTCNN's +1 pixel-area convention)."""
    x0, y0, x1, y1 = boxes.T
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = np.argsort(scores)[::-1]
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / denom <= thresh]
    return np.array(keep, dtype=np.int64)


def _nms_per_image(boxes: np.ndarray, inds: np.ndarray, thresh: float,
                   mode: str = "union") -> tuple[np.ndarray, np.ndarray]:
    picks = [np.flatnonzero(inds == i)[_nms(boxes[inds == i, :4], boxes[inds == i, 4], thresh, mode)]
             for i in np.unique(inds)]
    pick = np.concatenate(picks) if picks else np.zeros(0, np.int64)
    return pick, inds[pick]


def _square(b: np.ndarray) -> np.ndarray:
    """Grow boxes (K, >=4) into squares around their centres."""
    b, w, h = b.copy(), b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    side = np.maximum(w, h)
    b[:, :2] += np.stack([w - side, h - side], axis=1) / 2
    b[:, 2:4] = b[:, :2] + side[:, None]
    return b


def _regress(b: np.ndarray, reg: np.ndarray) -> np.ndarray:
    b, w, h = b.copy(), b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1
    b[:, :4] += reg * np.stack([w, h, w, h], axis=1)
    return b


def _area_patches(frames: np.ndarray, inds: np.ndarray, x0: np.ndarray, y0: np.ndarray,
                  x1: np.ndarray, y1: np.ndarray, size: int) -> np.ndarray:
    """float32 (K, 3, size, size): frame rows [y0, y1) x cols [x0, x1) area-resized.

    Same bins as torch's `interpolate(mode="area")` (adaptive average pooling: bin i spans
    [floor(i*n/size), ceil((i+1)*n/size))), computed from an integral image with a few
    gathers instead of one torch call per patch, which is slow on a shared CPU.
    """
    out = np.empty((len(inds), size, size, 3), np.float32)
    i = np.arange(size)
    dtype = np.int64 if frames.shape[1] * frames.shape[2] * 255 >= 2**31 else np.int32
    for f in np.unique(inds):
        sel = np.flatnonzero(inds == f)
        integral = np.zeros((frames.shape[1] + 1, frames.shape[2] + 1, 3), dtype)
        np.cumsum(np.cumsum(frames[f], axis=0, dtype=integral.dtype), axis=1, out=integral[1:, 1:])
        n_y, n_x = (y1 - y0)[sel, None], (x1 - x0)[sel, None]
        a = y0[sel, None] + i * n_y // size
        b = y0[sel, None] + -(-(i + 1) * n_y // size)
        c = x0[sel, None] + i * n_x // size
        d = x0[sel, None] + -(-(i + 1) * n_x // size)
        sums = (integral[b[:, :, None], d[:, None, :]] - integral[a[:, :, None], d[:, None, :]]
                - integral[b[:, :, None], c[:, None, :]] + integral[a[:, :, None], c[:, None, :]])
        out[sel] = sums / ((b - a)[:, :, None, None] * (d - c)[:, None, :, None])
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


class MTCNN:
    """Boxes (x0, y0, x1, y1, score) per image, from facenet-pytorch's MTCNN weights."""

    def __init__(self, *, min_face_px: float = 20.0,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7), factor: float = 0.709,
                 cache_dir: str | os.PathLike[str] | None = None) -> None:
        import torch

        self.min_face_px, self.thresholds, self.factor = min_face_px, thresholds, factor
        self.nets = {n: torch.load(assets.path(f"mtcnn_{n}", cache_dir), map_location="cpu",
                                   weights_only=True) for n in ("pnet", "rnet", "onet")}

    def _run(self, name: str, x: Any) -> tuple[Any, ...]:
        import torch.nn.functional as F

        p = self.nets[name]

        def conv(x: Any, i: Any, pool: tuple[int, int] | None = None) -> Any:
            x = F.prelu(F.conv2d(x, p[f"conv{i}.weight"], p[f"conv{i}.bias"]), p[f"prelu{i}.weight"])
            return F.max_pool2d(x, pool[0], pool[1], ceil_mode=True) if pool else x

        def dense(x: Any, n: str) -> Any:
            return F.linear(x, p[f"{n}.weight"], p[f"{n}.bias"])

        if name == "pnet":
            x = conv(conv(conv(x, 1, (2, 2)), 2), 3)
            return F.conv2d(x, p["conv4_2.weight"], p["conv4_2.bias"]), F.softmax(
                F.conv2d(x, p["conv4_1.weight"], p["conv4_1.bias"]), dim=1)
        if name == "rnet":
            x = conv(conv(conv(x, 1, (3, 2)), 2, (3, 2)), 3)
            x = F.prelu(dense(x.permute(0, 3, 2, 1).flatten(1), "dense4"), p["prelu4.weight"])
            return dense(x, "dense5_2"), F.softmax(dense(x, "dense5_1"), dim=1)
        x = conv(conv(conv(conv(x, 1, (3, 2)), 2, (3, 2)), 3, (2, 2)), 4)
        x = F.prelu(dense(x.permute(0, 3, 2, 1).flatten(1), "dense5"), p["prelu5.weight"])
        return dense(x, "dense6_2"), F.softmax(dense(x, "dense6_1"), dim=1)

    def _refine(self, frames: np.ndarray, boxes: np.ndarray, inds: np.ndarray, net: str,
                size: int, thresh: float, nms_mode: str) -> tuple[np.ndarray, np.ndarray]:
        import torch

        if len(boxes) == 0:
            return boxes, inds
        h, w = frames.shape[1:3]
        b = np.trunc(boxes[:, :4]).astype(np.int64)
        # facenet-pytorch's crop: rows [y0 - 1, y1), cols [x0 - 1, x1), clipped to the frame.
        x0, y0 = np.maximum(b[:, 0], 1) - 1, np.maximum(b[:, 1], 1) - 1
        x1, y1 = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
        ok = (x1 > x0) & (y1 > y0)
        boxes, inds = boxes[ok], inds[ok]
        if len(boxes) == 0:
            return boxes, inds
        patches = _area_patches(frames, inds, x0[ok], y0[ok], x1[ok], y1[ok], size)
        reg, prob = self._run(net, (torch.from_numpy(patches) - 127.5) * 0.0078125)
        score, reg = prob[:, 1].numpy(), reg.numpy()
        keep = score > thresh
        boxes = np.concatenate([boxes[keep, :4], score[keep, None]], axis=1)
        inds, reg = inds[keep], reg[keep]
        if net == "onet":
            boxes = _regress(boxes, reg)
        pick, inds = _nms_per_image(boxes, inds, 0.7, nms_mode)
        boxes = boxes[pick]
        if net == "rnet":
            boxes = _square(_regress(boxes, reg[pick]))
        return boxes, inds

    def detect(self, frames: np.ndarray, min_face_px: float | None = None) -> list[np.ndarray]:
        """One float32 (K, 5) array of boxes per frame of uint8 (N, H, W, 3) RGB frames;
        faces smaller than `min_face_px` (default: the detector's) are not searched for."""
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            imgs = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
            imgs = imgs.float().contiguous()
            h, w = imgs.shape[2:]
            m = 12.0 / (min_face_px or self.min_face_px)
            scale, minl, found = m, min(h, w) * m, []
            while minl >= 12:  # pyramid: P-net sees faces of min_face_px and up
                im = F.interpolate(imgs, size=(int(h * scale + 1), int(w * scale + 1)), mode="area")
                reg, prob = self._run("pnet", (im - 127.5) * 0.0078125)
                prob, reg = prob[:, 1].numpy(), reg.numpy()
                ii, yy, xx = np.nonzero(prob >= self.thresholds[0])
                q0 = np.floor((2 * np.stack([xx, yy], 1) + 1) / scale)
                q1 = np.floor((2 * np.stack([xx, yy], 1) + 12) / scale)
                b = np.concatenate([q0, q1, prob[ii, yy, xx][:, None], reg[ii, :, yy, xx]], axis=1)
                pick, ii = _nms_per_image(b, ii, 0.5)  # per scale and image
                found.append((b[pick], ii))
                scale, minl = scale * self.factor, minl * self.factor
            boxes = np.concatenate([f[0] for f in found] + [np.zeros((0, 9))])
            inds = np.concatenate([f[1] for f in found] + [np.zeros(0, np.int64)])
            pick, inds = _nms_per_image(boxes, inds, 0.7)  # across scales
            boxes = boxes[pick]
            if len(boxes):  # P-net's box regression (on widths without the +1)
                wh = np.tile(boxes[:, 2:4] - boxes[:, 0:2], 2)
                boxes = _square(np.concatenate([boxes[:, :4] + boxes[:, 5:9] * wh, boxes[:, 4:5]], 1))
            boxes, inds = self._refine(frames, boxes, inds, "rnet", 24, self.thresholds[1], "union")
            boxes, inds = self._refine(frames, boxes, inds, "onet", 48, self.thresholds[2], "min")
        return [boxes[inds == i].astype(np.float32) for i in range(len(frames))]


# --- stable crop -----------------------------------------------------------------------

def smooth_boxes(n: int, t: np.ndarray, det: np.ndarray, *, smooth: str = "track",
                 window: int = 5, margin: float = 0.05) -> np.ndarray:
    """Square crop boxes (n, 4) for frames 0..n-1 from face boxes `det` found at frames `t`.

    Tracks centre and side (the longer side of the box), not corners: a median of
    corners can shear the box. "track": running median over `window` detections, then
    linear interpolation in time (held constant before the first / after the last);
    "fixed": one median box for all frames. The side grows by `margin` on each side.
    """
    track = np.stack([(det[:, 0] + det[:, 2]) / 2, (det[:, 1] + det[:, 3]) / 2,
                      np.maximum(det[:, 2] - det[:, 0], det[:, 3] - det[:, 1])], axis=1)
    if smooth == "fixed":
        cx, cy, side = np.repeat(np.median(track, axis=0)[None], n, axis=0).T
    else:
        k = window // 2
        med = np.stack([np.median(track[max(0, i - k): i + k + 1], axis=0) for i in range(len(track))])
        cx, cy, side = (np.interp(np.arange(n), t, med[:, j]) for j in range(3))
    half = side * (1 + 2 * margin) / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1).astype(np.float32)


class FaceCropper:
    """Square face crops of a clip that follow the largest face without jitter.

    margin: share of the face box's side added on each side; the box is MTCNN's,
        squared to its longer side (forehead to chin). Default 0.05 (crop = 1.1x box):
        face-api's classifier wants tight crops. Measured on the Pexels video: margins up
        to ~0.1 read sad in the first 3 s and happy at 12-16 s; 0.25 (1.5x) reads happy
        then angry, the wrong way round.
    out_size: side of the returned crops in pixels.
    max_detect_frames: detect on at most this many evenly spaced frames and interpolate
        the rest (None: every frame); faces move little within a few frames.
    smooth: "track" = running median (window `smooth_window` probes) of the box centre
        and size, then linear interpolation in time; "fixed" = one median box per clip.
    min_face_frac: smallest face searched for, as a share of the frame's short side
        (bigger is faster: the MTCNN pyramid starts coarser).
    """

    def __init__(self, margin: float = 0.05, out_size: int = 112, *,
                 max_detect_frames: int | None = 16, smooth: Literal["track", "fixed"] = "track",
                 smooth_window: int = 5, min_face_frac: float = 0.1,
                 cache_dir: str | os.PathLike[str] | None = None,
                 detector: MTCNN | None = None) -> None:
        if margin < 0 or out_size < 8 or smooth not in ("track", "fixed") or smooth_window < 1:
            raise ValueError(f"FaceCropper: bad option margin={margin} out_size={out_size} "
                             f"smooth={smooth!r} smooth_window={smooth_window}; want margin>=0, "
                             "out_size>=8, smooth in ('track', 'fixed'), smooth_window>=1")
        if max_detect_frames is not None and max_detect_frames < 1:
            raise ValueError("FaceCropper: max_detect_frames must be >= 1 or None, "
                             f"got {max_detect_frames}")
        self.margin, self.out_size, self.max_detect_frames = margin, out_size, max_detect_frames
        self.smooth, self.smooth_window, self.min_face_frac = smooth, smooth_window, min_face_frac
        self.detector = detector or MTCNN(cache_dir=cache_dir)  # share one across croppers

    def detect_largest(self, frames: np.ndarray, chunk: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """Largest face box (N, 4) per frame and whether one was found (N,).

        Frames are shrunk by an integer factor to a short side of ~360 px first (MTCNN
        finds faces of >= min_face_frac of the frame just as well, and 4K frames as
        float would take GBs), and detected `chunk` frames at a time.
        """
        k = max(1, min(frames.shape[1:3]) // 360)
        min_px = max(20.0, self.min_face_frac * min(frames.shape[1:3]) / k)
        boxes = np.zeros((len(frames), 4), np.float32)
        found = np.zeros(len(frames), bool)
        for s in range(0, len(frames), chunk):
            part = frames[s : s + chunk]
            if k > 1:  # box filter: mean of k x k blocks, without a float copy of the frames
                n, h, w = part.shape[0], part.shape[1] // k, part.shape[2] // k
                blocks = part[:, : h * k, : w * k].reshape(n, h, k, w, k, 3)
                part = (blocks.sum(axis=(2, 4), dtype=np.uint32) // (k * k)).astype(np.uint8)
            for i, b in enumerate(self.detector.detect(part, min_px), start=s):
                if len(b):
                    boxes[i] = b[np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])), :4] * k
                    found[i] = True
        return boxes, found

    def crop_clip(self, frames: np.ndarray) -> CropResult:
        """Square face crops of one clip's frames (uint8 (N, H, W, 3) RGB, in time order).
        No face on any probed frame: centre crops and face_ratio 0 (the caller decides)."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
            raise ValueError(f"crop_clip: expected uint8 frames (N>0, H, W, 3), "
                             f"got {frames.dtype} {frames.shape}")
        n, h, w = frames.shape[:3]
        probes = np.arange(n)
        if self.max_detect_frames is not None and n > self.max_detect_frames:
            probes = np.unique(np.linspace(0, n - 1, self.max_detect_frames).round().astype(int))
        det, ok = self.detect_largest(frames[probes])
        probes, det, ok = self._bisect_changes(frames, probes, det, ok)
        # Nearest probe decides `found` for frames that were not probed.
        nearest = np.abs(np.arange(n)[:, None] - probes[None, :]).argmin(axis=1)
        found = ok[nearest]
        if not ok.any():  # no face anywhere: centre square so the result keeps its shape
            side = float(min(h, w))
            box = np.array([(w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2], np.float32)
            boxes = np.repeat(box[None], n, axis=0)
            return CropResult(self._crop(frames, boxes), boxes, found, 0.0)
        boxes = smooth_boxes(n, probes[ok], det[ok], smooth=self.smooth, window=self.smooth_window,
                             margin=self.margin)
        return CropResult(self._crop(frames, boxes), boxes, found, float(found.mean()))

    def _bisect_changes(self, frames: np.ndarray, probes: np.ndarray, det: np.ndarray,
                        ok: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where two neighbouring probes disagree (the face left or came back between
        them), detect on the frame halfway, until the change lies between two adjacent
        frames: `found` is then exact at every change the probes saw, for a few
        detections each. A face-free stretch shorter than the probe spacing, between
        two probes that both see the face, can still go unseen."""
        known = {int(p): (d, bool(o)) for p, d, o in zip(probes, det, ok)}
        while True:
            idx = sorted(known)
            todo = [(a + b) // 2 for a, b in zip(idx, idx[1:]) if b - a > 1 and known[a][1] != known[b][1]]
            if not todo:
                break
            d, o = self.detect_largest(frames[todo])
            known.update({t: (d[j], bool(o[j])) for j, t in enumerate(todo)})
        idx = sorted(known)
        return (np.array(idx), np.stack([known[i][0] for i in idx]).astype(np.float32),
                np.array([known[i][1] for i in idx]))

    def _crop(self, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Crop each box (zero padding outside the frame) and resize to out_size."""
        import torch
        import torch.nn.functional as F

        h, w = frames.shape[1:3]
        out = np.zeros((len(frames), self.out_size, self.out_size, 3), np.uint8)
        for i, (f, b) in enumerate(zip(frames, np.round(boxes).astype(np.int64))):
            side = max(int(b[2] - b[0]), 1)
            canvas = np.zeros((side, side, 3), np.uint8)
            x0, y0, x1, y1 = max(b[0], 0), max(b[1], 0), min(b[0] + side, w), min(b[1] + side, h)
            if x1 > x0 and y1 > y0:
                canvas[y0 - b[1]: y1 - b[1], x0 - b[0]: x1 - b[0]] = f[y0:y1, x0:x1]
            x = torch.from_numpy(canvas).permute(2, 0, 1)[None].float()
            x = F.interpolate(x, size=(self.out_size, self.out_size), mode="bilinear",
                              align_corners=False, antialias=side > self.out_size)
            out[i] = x[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
        return out
