"""face-api's 7-class facial expression classifier (npm `@vladmandic/face-api` 1.7.15),
re-implemented in torch and loaded from the tfjs weights in the asset cache.

Network (face-api `FaceFeatureExtractor` + `FaceExpressionNet`): four dense blocks of
32, 64, 128, 256 channels; in each, `conv0` halves the resolution (a plain 3x3 conv in
the first block, depthwise-separable in the others) and `conv1..conv3` are
depthwise-separable, each fed the ReLU of the sum of the outputs before it; the block
returns the ReLU of the sum of all four. Then a 7x7 average pool (112 -> 7 -> 1), a
fully connected layer to 7 logits and a softmax. All convolutions use TensorFlow's
'same' padding, which is asymmetric (pad after, not before) for stride 2 on even sizes.

Input: RGB face crops; face-api pads a non-square crop to a square (zeros, centred),
resizes to 112x112 (bilinear), subtracts the per-channel mean and divides by 255.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from emodist import assets
from emodist.labels import canonical

# face-api's output order.
FACE_API_CLASSES: tuple[str, ...] = (
    "neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised",
)
# The same classes in emodist's label words (fearful -> fear, ...).
CLASSES: tuple[str, ...] = tuple(canonical(c) for c in FACE_API_CLASSES)
INPUT_SIZE = 112
MEAN_RGB = (122.782, 117.001, 104.298)
_CHANNELS = (32, 64, 128, 256)
MODEL_ID = "face-api/face_expression_model@1.7.15"


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every weight the architecture uses, with its shape in the tfjs manifest (HWIO)."""
    shapes: dict[str, tuple[int, ...]] = {}
    c_in = 3
    for b, c in enumerate(_CHANNELS):
        for k in range(4):
            p = f"dense{b}/conv{k}"
            cin_k = c_in if k == 0 else c
            if b == 0 and k == 0:
                shapes[f"{p}/filters"] = (3, 3, cin_k, c)
            else:
                shapes[f"{p}/depthwise_filter"] = (3, 3, cin_k, 1)
                shapes[f"{p}/pointwise_filter"] = (1, 1, cin_k, c)
            shapes[f"{p}/bias"] = (c,)
        c_in = c
    shapes["fc/weights"] = (_CHANNELS[-1], len(FACE_API_CLASSES))
    shapes["fc/bias"] = (len(FACE_API_CLASSES),)
    return shapes


def load_tfjs_weights(manifest: Path, shard_dir: Path | None = None) -> dict[str, np.ndarray]:
    """Read a tfjs weights manifest and its binary shards into float32 arrays.

    Weights are stored back to back in manifest order across the concatenated shards;
    uint8-quantised ones dequantise as `q * scale + min`.
    """
    groups = json.loads(Path(manifest).read_text())
    shard_dir = Path(shard_dir) if shard_dir else Path(manifest).parent
    out: dict[str, np.ndarray] = {}
    for g in groups:
        buf = b"".join((shard_dir / p).read_bytes() for p in g["paths"])
        off = 0
        for w in g["weights"]:
            n = int(np.prod(w["shape"])) if w["shape"] else 1
            q = w.get("quantization")
            if q:
                if q["dtype"] != "uint8":
                    raise ValueError(f"{manifest}: {w['name']}: quantisation {q['dtype']} "
                                     "is not supported (uint8 only); please report")
                raw = np.frombuffer(buf, np.uint8, n, off).astype(np.float32)
                arr = raw * np.float32(q["scale"]) + np.float32(q["min"])
                off += n
            else:
                if w["dtype"] != "float32":
                    raise ValueError(f"{manifest}: {w['name']}: dtype {w['dtype']} unsupported")
                arr = np.frombuffer(buf, np.float32, n, off).copy()
                off += 4 * n
            out[w["name"]] = arr.reshape(w["shape"])
        if off != len(buf):
            raise ValueError(f"{manifest}: read {off} of {len(buf)} bytes of the shards; "
                             "the manifest does not describe the file; re-fetch the assets")
    return out


def check_weights(weights: dict[str, np.ndarray]) -> None:
    """Raise unless `weights` has exactly the architecture's names and shapes."""
    want = expected_shapes()
    missing = sorted(set(want) - set(weights))
    unused = sorted(set(weights) - set(want))
    bad = sorted(k for k in set(want) & set(weights) if tuple(weights[k].shape) != want[k])
    if missing or unused or bad:
        raise ValueError(
            f"face expression weights do not fit the architecture: missing {missing}, "
            f"unused {unused}, wrong shape {[(k, weights[k].shape, want[k]) for k in bad]}"
        )


def _to_torch(weights: dict[str, np.ndarray], device: Any) -> dict[str, Any]:
    """tfjs layouts -> torch: filters HWIO -> OIHW, depthwise HWC1 -> C1HW."""
    import torch

    out = {}
    for k, v in weights.items():
        if k.endswith("/filters") or k.endswith("/pointwise_filter"):
            v = v.transpose(3, 2, 0, 1)
        elif k.endswith("/depthwise_filter"):
            v = v.transpose(2, 3, 0, 1)
        out[k] = torch.from_numpy(np.ascontiguousarray(v)).to(device)
    return out


def _same(x: Any, stride: int) -> Any:
    """TF 'same' padding for a 3x3 kernel: the odd pixel of padding goes after."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    ph = max((-(-h // stride) - 1) * stride + 3 - h, 0)
    pw = max((-(-w // stride) - 1) * stride + 3 - w, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


def forward(p: dict[str, Any], x: Any) -> Any:
    """Logits (N, 7) for normalised input (N, 3, 112, 112)."""
    import torch.nn.functional as F

    def sep(x: Any, name: str, stride: int) -> Any:
        x = F.conv2d(_same(x, stride), p[f"{name}/depthwise_filter"], stride=stride,
                     groups=x.shape[1])
        return F.conv2d(x, p[f"{name}/pointwise_filter"], p[f"{name}/bias"])

    for b in range(4):
        n = f"dense{b}"
        if b == 0:
            out1 = F.conv2d(_same(x, 2), p[f"{n}/conv0/filters"], p[f"{n}/conv0/bias"], stride=2)
        else:
            out1 = sep(x, f"{n}/conv0", 2)
        out1 = F.relu(out1)
        out2 = sep(out1, f"{n}/conv1", 1)
        out3 = sep(F.relu(out1 + out2), f"{n}/conv2", 1)
        out4 = sep(F.relu(out1 + out2 + out3), f"{n}/conv3", 1)
        x = F.relu(out1 + out2 + out3 + out4)
    x = F.avg_pool2d(x, 7, 2)  # 'valid' on 7x7 -> 1x1
    return x.flatten(1) @ p["fc/weights"] + p["fc/bias"]


class ExpressionClassifier:
    """7-class expression probabilities for RGB face crops, in face-api's order
    (FACE_API_CLASSES; `CLASSES` holds the same classes in emodist's label words)."""

    model_id = MODEL_ID

    def __init__(
        self,
        device: str = "cpu",
        batch_size: int = 64,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        import torch

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.batch_size = batch_size
        manifest = assets.path("face_expression_manifest", cache_dir)
        assets.path("face_expression_model", cache_dir)  # checks the shard's hash
        weights = load_tfjs_weights(manifest)
        check_weights(weights)
        self._params = _to_torch(weights, self.device)

    def preprocess(self, crops: np.ndarray) -> Any:
        """uint8 (N, H, W, 3) RGB -> float (N, 3, 112, 112), as face-api does."""
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device)
        x = x.permute(0, 3, 1, 2).float()
        h, w = x.shape[-2:]
        if h != w:  # zero-pad the short side, centred; an odd pixel goes after (padToSquare)
            d = abs(h - w)
            pad = (d // 2, d - d // 2, 0, 0) if h > w else (0, 0, d // 2, d - d // 2)
            x = F.pad(x, pad)
        if x.shape[-1] != INPUT_SIZE:
            # Antialias when shrinking: big crops otherwise alias (tfjs does not, but its
            # inputs are usually already near 112 px).
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                              align_corners=False, antialias=x.shape[-1] > INPUT_SIZE)
        mean = torch.tensor(MEAN_RGB, device=self.device).view(1, 3, 1, 1)
        return (x - mean) / 255.0

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """Probabilities float32 (N, 7) in face-api's order for uint8 (N, H, W, 3) RGB."""
        import torch

        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
            raise ValueError(f"expected uint8 crops (N, H, W, 3), got {crops.dtype} {crops.shape}")
        out = [np.zeros((0, len(FACE_API_CLASSES)), np.float32)]
        with torch.inference_mode():
            for i in range(0, len(crops), self.batch_size):
                logits = forward(self._params, self.preprocess(crops[i : i + self.batch_size]))
                out.append(torch.softmax(logits, dim=1).cpu().numpy())
        return np.concatenate(out)


def to_labels(probs: np.ndarray, labels: tuple[str, ...] | list[str]) -> np.ndarray:
    """Map (N, 7) face-api probabilities onto `labels` (emodist words), renormalised.

    Labels the classifier cannot express (e.g. MAFW's contempt, anxiety, helplessness,
    disappointment) get probability 0; the rest are renormalised to sum to 1. Raises if
    none of `labels` is one of the classifier's classes.
    """
    idx = [CLASSES.index(canonical(lab)) if canonical(lab) in CLASSES else -1 for lab in labels]
    if all(i < 0 for i in idx):
        raise ValueError(f"none of the labels {list(labels)} is one the expression "
                         f"classifier knows ({list(CLASSES)}); use a label set that shares some")
    p = np.asarray(probs, np.float64).reshape(-1, len(CLASSES))
    out = np.stack([p[:, i] if i >= 0 else np.zeros(len(p)) for i in idx], axis=1)
    s = out.sum(axis=1, keepdims=True)
    # A face-api distribution concentrated on classes not in `labels` (sum ~ 0): spread
    # uniformly over the expressible labels rather than divide by zero.
    fallback = np.array([1.0 if i >= 0 else 0.0 for i in idx])
    out = np.where(s > 1e-12, out / np.maximum(s, 1e-12), fallback / fallback.sum())
    return out
