"""Training examples: each labeled clip as the labeler sees it (keyframes, the motion
descriptions of the gaps, their times) and its class, built once by the same listing,
decode, face and describe stages as `emodist run`, and cached under OUT/examples/<hash>/
(or finetune.examples_dir/<hash>/, which a sweep of runs can share).

The cache is keyed by every setting that changes what the labeler sees (the plan,
decode size, face crops, describer, mode, labels) and by the training manifest, so a
second `finetune` with the same settings trains without decoding or describing again,
and a changed setting builds a new set beside the old. Descriptions can instead come
from an earlier run's predictions (`descriptions_from`): the describer then does not run.
A clip that cannot be decoded is left out and reported; the others train.
"""
from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from emodist import storage
from emodist.output import carry
from emodist import schema as col
from emodist.config import Config, ConfigError
from emodist.labels import canonical

log = logging.getLogger(__name__)

INDEX = "example_index"
CLASS = "class_index"
KEYFRAMES = "keyframes"  # the (K, H, W, 3) uint8 keyframes as bytes
SHAPE = "keyframes_shape"
SCHEMA = pa.schema([
    (INDEX, pa.int64()), (col.CLIP_ID, pa.string()), (CLASS, pa.int32()),
    (KEYFRAMES, pa.large_binary()), (SHAPE, pa.list_(pa.int32())), (col.KEYFRAME_TS, pa.list_(pa.float64())),
    (col.DESCRIPTIONS, pa.list_(pa.string())), (col.GAP_SPANS, pa.list_(pa.list_(pa.float64(), 2))),
    # which keyframes show a face (null without the face stage): training prompts say
    # "no face" where inference's do, instead of showing the frame
    (col.KEYFRAME_FACE, pa.list_(pa.bool_())),
])
COMPLETE = "_complete.json"
PART_ROWS = 256


@dataclass
class Examples:
    uri: str  # the folder of example parts
    classes: np.ndarray  # int, class index of example i (label order)
    clip_ids: list[str]
    left_out: list[str]  # one line per clip that could not be made an example


def examples_key(cfg: Config, train_uri: str, descriptions_from: str | None, config_hash: str | None = None) -> str:
    """Hash of what the labeler sees of a clip, and of where the clips come from."""
    d = cfg.label_settings()
    d.pop("labeler")
    if not d["plan"]["shuffle"]:  # the seed moves frames only under plan.shuffle: seeds of a sweep share examples
        d.pop("run")
    if descriptions_from:
        d.pop("describer")
    d["train"], d["descriptions_from"] = train_uri, descriptions_from
    if config_hash is not None:  # the rows of one config of that output (keys without it stay as they were)
        d["descriptions_config_hash"] = config_hash
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def labeled_clips(cfg: Config, train_uri: str) -> dict[str, int]:
    """clip_id -> class index of every clip of the training manifest; ConfigError naming
    the clip for a row that does not parse, a clip without a label or with a label outside
    the label set."""
    from emodist.io.source import read_manifest

    table, bad = read_manifest(train_uri, cfg)
    where = storage.scrub(train_uri)
    if bad:
        raise ConfigError(f"{where}: {len(bad)} line(s) do not parse, the first: {bad[0][col.ERROR_MESSAGE]}; "
                          "fix or remove them (training needs every clip it is given)")
    names = cfg.label_names
    index = {n: j for j, n in enumerate(names)}
    out: dict[str, int] = {}
    unlabeled = []
    for clip_id, label in zip(table.column(col.CLIP_ID).to_pylist(), table.column(col.REF_LABEL).to_pylist()):
        if not label:
            unlabeled.append(clip_id)
            continue
        j = index.get(canonical(label))
        if j is None:
            raise ConfigError(f"{where}: clip {clip_id!r} is labeled {label!r}, which is not one of the labels "
                              f"{list(names)}; fix its label, or set labels to the set it belongs to")
        out[clip_id] = j
    if unlabeled:
        raise ConfigError(f"{where}: {len(unlabeled)} clip(s) have no label (the first: {unlabeled[0]!r}); "
                          "fine-tuning needs a 'label' column with a label on every row")
    if not out:
        raise ConfigError(f"{where}: no clips to train on")
    return out


def _descriptions_of(predictions_uri: str, cfg: Config, config_hash: str | None = None) -> dict[str, tuple[list, list]]:
    """clip_id -> (descriptions, gap spans) of an earlier run's prediction rows, of one
    config: an output with rows of two (run --new-config) needs `config_hash`."""
    from emodist.output.folder import ConfigChoice, RunFolder

    try:
        t, _ = RunFolder(predictions_uri, cfg).read(columns=[col.CLIP_ID, col.DESCRIPTIONS, col.GAP_SPANS],
                                                    config_hash=config_hash)
    except ConfigChoice as exc:
        raise ConfigError(f"--descriptions-from {exc}") from None
    if not t.num_rows:
        return {}
    return {c: (d or [], s or []) for c, d, s in zip(*(t.column(n).to_pylist() for n in t.column_names))}


def check_descriptions(descriptions_from: str, cfg: Config, config_hash: str | None = None) -> None:
    """Refuse, before Ray starts, an output whose prediction rows are of two configs
    (run --new-config) when `config_hash` picks none, or of no config `config_hash`."""
    from emodist.output.folder import ConfigChoice, RunFolder, choose_config

    folder = RunFolder(descriptions_from, cfg)
    try:
        choose_config(folder.uri, folder.config_rows(), config_hash)
    except ConfigChoice as exc:
        raise ConfigError(f"--descriptions-from {exc}") from None


def prepare(cfg: Config, train_uri: str, output_uri: str, classes_of: dict[str, int],
            descriptions_from: str | None = None, config_hash: str | None = None) -> Examples:
    """The training examples of `train_uri` (`classes_of`: its `labeled_clips`), built (in
    Ray) or read from the cache."""
    cache = storage.absolute(cfg.finetune.examples_dir) if cfg.finetune.examples_dir else posixpath.join(output_uri, "examples")
    folder = posixpath.join(cache, examples_key(cfg, train_uri, descriptions_from, config_hash))
    fs, root = storage.filesystem(folder, cfg)
    done = posixpath.join(root, COMPLETE)
    if fs.exists(done):
        meta = json.loads(fs.cat_file(done))
        log.info("training examples: %d from %s (cached)", len(meta["clip_ids"]), storage.scrub(folder))
        return Examples(folder, np.asarray(meta["classes"], np.int64), meta["clip_ids"], meta["left_out"])
    if fs.exists(root):  # a build that a crash cut short
        fs.rm(root, recursive=True)
    fs.makedirs(root, exist_ok=True)
    ex = _build(cfg, train_uri, folder, classes_of, descriptions_from, config_hash)
    fs.pipe_file(done, json.dumps({"clip_ids": ex.clip_ids, "classes": ex.classes.tolist(),
                                   "left_out": ex.left_out}).encode())
    return ex


def _build(cfg: Config, train_uri: str, folder: str, classes_of: dict[str, int],
           descriptions_from: str | None, config_hash: str | None = None) -> Examples:
    from emodist.io.source import open_source
    from emodist.pipeline import described_dataset
    from emodist.stages.describe import face_mask

    given = _descriptions_of(descriptions_from, cfg, config_hash) if descriptions_from else None
    if given is not None:  # descriptions are read, not made: no describer runs
        cfg = cfg.model_copy(update={"describer": cfg.describer.model_copy(update={"backend": "none"})})
    fs, root = storage.filesystem(folder, cfg)
    clip_ids: list[str] = []
    classes: list[int] = []
    left_out: list[str] = []
    pending: list[dict] = []

    def flush() -> None:
        if pending:
            with fs.open(posixpath.join(root, f"part-{len(clip_ids):09d}.parquet"), "wb") as f:
                pq.write_table(pa.Table.from_pylist(pending, schema=SCHEMA), f)
            clip_ids.extend(r[col.CLIP_ID] for r in pending)
            classes.extend(r[CLASS] for r in pending)
            pending.clear()

    clips = open_source(train_uri, cfg).dataset()
    for batch in described_dataset(cfg, clips).iter_batches(batch_size=None, batch_format="numpy"):
        failed, _, _ = carry.unpack(batch)
        left_out += failed.column(col.ERROR_MESSAGE).to_pylist()
        for i in range(len(batch[col.CLIP_ID])):
            stage = batch[col.ERROR_STAGE][i]
            if stage == carry.CARRIED:
                continue
            if stage:
                left_out.append(str(batch[col.ERROR_MESSAGE][i]))
                continue
            clip_id = str(batch[col.CLIP_ID][i])
            descriptions, spans = list(batch[col.DESCRIPTIONS][i]), [list(s) for s in batch[col.GAP_SPANS][i]]
            if given is not None:
                if clip_id not in given:
                    left_out.append(f"{clip_id}: no prediction row in {storage.scrub(descriptions_from)} to take "
                                    "its descriptions from")
                    continue
                descriptions, spans = given[clip_id]
            frames = np.ascontiguousarray(batch[col.FRAMES][i], dtype=np.uint8)
            face = face_mask(batch, i)  # the describe stage kept keyframes only, and their flags
            pending.append({INDEX: len(clip_ids) + len(pending), col.CLIP_ID: clip_id, CLASS: classes_of[clip_id],
                            KEYFRAMES: frames.tobytes(), SHAPE: list(frames.shape),
                            col.KEYFRAME_TS: [float(t) for t in batch[col.FRAME_TS][i]],
                            col.DESCRIPTIONS: [str(d) for d in descriptions], col.GAP_SPANS: spans,
                            col.KEYFRAME_FACE: None if face is None else face.tolist()})
            if len(pending) >= PART_ROWS:
                flush()
    flush()
    if left_out:
        log.warning("%d training clip(s) left out (not decodable or not described); the first: %s",
                    len(left_out), left_out[0])
    if not clip_ids:
        raise ConfigError(f"{storage.scrub(train_uri)}: no clip could be made a training example; the first "
                          f"reason: {left_out[0] if left_out else 'none given'}")
    return Examples(folder, np.asarray(classes, np.int64), clip_ids, left_out)


def clip_input(row: dict):
    """An example row as the labeler's ClipInput."""
    from emodist.models.base import ClipInput

    frames = np.frombuffer(row[KEYFRAMES], dtype=np.uint8).reshape(row[SHAPE])
    face = row.get(col.KEYFRAME_FACE)  # absent from examples cached before it was kept
    return ClipInput(row[col.CLIP_ID], frames, np.asarray(row[col.KEYFRAME_TS], np.float64),
                     list(row[col.DESCRIPTIONS]), [tuple(s) for s in row[col.GAP_SPANS]],
                     keyframe_face=None if face is None else np.asarray(face, bool))
