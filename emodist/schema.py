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
FACE_RATIO = "face_ratio"  # share of decoded frames with a detected face; NaN without the face stage
FACE_FOUND = "face_found"  # bool (N,) per frame: a face was found (travels with FRAMES)
KEYFRAME_FACE = "keyframe_face"  # list[bool], one per keyframe; null without the face stage
GAP_FACE = "gap_face"  # list[list[bool]]: per gap, one per in-between frame; null likewise
NO_FACE_SPANS = "no_face_spans_s"  # list[[first, last]]: times of runs of frames without a face

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

TIMED_STAGES = ("decode", "face", "describe", "label")
TIMINGS_TYPE = pa.struct([(s, pa.float64()) for s in TIMED_STAGES])

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
        (KEYFRAME_FACE, pa.list_(pa.bool_())),
        (GAP_FACE, pa.list_(pa.list_(pa.bool_()))),
        (NO_FACE_SPANS, pa.list_(pa.list_(pa.float64(), 2))),
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


# --- rows of a finished batch, as Arrow tables ------------------------------------------


def _column(values, field: pa.Field) -> pa.Array:
    if pa.types.is_list(field.type) or pa.types.is_fixed_size_list(field.type):
        # A null list can come back from Ray's Arrow blocks as NaN.
        values = [None if v is None or (isinstance(v, float) and v != v) else
                  v.tolist() if hasattr(v, "tolist") else list(v) for v in values]
    return pa.array(values, type=field.type)


def table_of(schema: pa.Schema, batch: dict, rows, constants: dict) -> pa.Table:
    """The rows `rows` (indices) of a stage batch as a table of `schema`: each column
    from the batch column of the same name, or from `constants` (one value for every
    row), or, for the timings struct, from the stages' `t_<stage>_s` columns."""
    import numpy as np

    rows = np.asarray(rows, dtype=np.int64)
    n = len(rows)
    arrays = []
    for field in schema:
        if field.name in constants:
            arrays.append(pa.array([constants[field.name]] * n, type=field.type))
        elif field.name == TIMINGS:
            arrays.append(pa.StructArray.from_arrays(
                [pa.array(np.asarray(batch[f"t_{s}_s"], np.float64)[rows] if f"t_{s}_s" in batch else np.zeros(n),
                          pa.float64()) for s in TIMED_STAGES],
                fields=list(TIMINGS_TYPE)))
        else:
            arrays.append(_column(np.asarray(batch[field.name], dtype=object)[rows], field))
    return pa.Table.from_arrays(arrays, schema=schema)
