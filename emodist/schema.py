"""Column names and the Arrow schemas of emodist's outputs.

One prediction row per labeled clip, one failure row per clip that could not be
labeled. Stages declare the columns they need from these constants.
"""
from __future__ import annotations

import pyarrow as pa

# identity, carried through every stage
CLIP_ID = "clip_id"
URI = "uri"
REF_LABEL = "ref_label"  # ground truth from the manifest, "" when unknown

# decode stage
FRAMES = "frames"  # uint8 (N, H, W, 3), sorted by time
FRAME_TS = "frame_ts_s"  # float64 (N,), presentation time of each frame
FRAME_GAP = "frame_gap"  # int32 (N,): -1 for a keyframe, g for an in-between frame of gap g
DURATION_S = "duration_s"
NATIVE_FPS = "native_fps"
DECODE_DEVICE = "decode_device"

# face stage
FACE_RATIO = "face_ratio"  # share of frames with a detected face; NaN without the face stage

# describe stage
DESCRIPTIONS = "descriptions"  # list[str], one per gap
GAP_SPANS = "gap_spans_s"  # list[[start, end]], one per gap

# label stage
LABEL = "label"
LABEL_NAMES = "label_names"
PROBS = "probs"  # debiased distribution over LABEL_NAMES
PROBS_RAW = "probs_raw"  # the model's own distribution
DEBIAS = "debias_method"
KEYFRAME_TS = "keyframe_ts_s"
ANSWER = "answer"  # what the model said (the top letter, or generated text)
ANSWER_LABEL = "answer_label"  # the label the answer names, "" when it names none

# provenance
MODE = "mode"
PROMPT_VERSION = "prompt_version"
DESCRIBER_MODEL = "describer_model"
LABELER_MODEL = "labeler_model"
CONFIG_HASH = "config_hash"
TIMINGS = "timings_s"  # struct of per-stage seconds

# failures (dead letters)
ERROR_STAGE = "error_stage"
ERROR_TYPE = "error_type"
ERROR_MESSAGE = "error_message"
ATTEMPTS = "attempts"

TIMINGS_TYPE = pa.struct([(s, pa.float64()) for s in ("decode", "face", "describe", "label")])

PREDICTIONS = pa.schema(
    [
        (CLIP_ID, pa.string()),
        (URI, pa.string()),
        (REF_LABEL, pa.string()),
        (LABEL, pa.string()),
        (LABEL_NAMES, pa.list_(pa.string())),
        (PROBS, pa.list_(pa.float32())),
        (PROBS_RAW, pa.list_(pa.float32())),
        (DEBIAS, pa.string()),
        (ANSWER, pa.string()),
        (ANSWER_LABEL, pa.string()),
        (KEYFRAME_TS, pa.list_(pa.float64())),
        (DESCRIPTIONS, pa.list_(pa.string())),
        (GAP_SPANS, pa.list_(pa.list_(pa.float64(), 2))),
        (DURATION_S, pa.float64()),
        (NATIVE_FPS, pa.float64()),
        (DECODE_DEVICE, pa.string()),
        (FACE_RATIO, pa.float64()),
        (MODE, pa.string()),
        (PROMPT_VERSION, pa.string()),
        (DESCRIBER_MODEL, pa.string()),
        (LABELER_MODEL, pa.string()),
        (CONFIG_HASH, pa.string()),
        (TIMINGS, TIMINGS_TYPE),
    ]
)

FAILURES = pa.schema(
    [
        (CLIP_ID, pa.string()),
        (URI, pa.string()),
        (REF_LABEL, pa.string()),
        (ERROR_STAGE, pa.string()),
        (ERROR_TYPE, pa.string()),
        (ERROR_MESSAGE, pa.string()),
        (ATTEMPTS, pa.int32()),
        (CONFIG_HASH, pa.string()),
    ]
)
