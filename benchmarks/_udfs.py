"""Ray UDFs of the benchmarks (imported by Ray workers; keep imports light)."""
from __future__ import annotations

import os

import numpy as np

from emodist.stages.decode import DecodeStage

PID = "bench_pid"


class PidDecodeStage(DecodeStage):
    """emodist's DecodeStage, plus a column naming the actor process that decoded each
    clip (to see how the listing's blocks are spread over the actors)."""

    def __call__(self, batch):
        out = super().__call__(batch)
        out[PID] = np.full(len(out["clip_id"]), os.getpid(), dtype=np.int64)
        return out
