"""Predictions and a manifest, read for auditing: batch by batch, never a whole output.

A run folder's prediction parts (or one csv/parquet/jsonl file) stream as Arrow batches
of the few columns a pass needs; a row's distribution becomes a row of an (n, L) matrix
in label-set order. The manifest is held as its ids (Arrow) and label codes (int8): the
join of a batch is one `index_in` against the ids.
"""
from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from emodist import schema as col
from emodist import storage
from emodist.labels import canonical, match_label
from emodist.output.folder import PREDICTIONS, ConfigChoice, RunFolder, choose_config, hash_counts

BATCH_ROWS = 65_536
PRED_COLUMNS = (col.LABEL, "pred", "prediction")  # as eval names them
N_EXAMPLES = 10


class AuditInputError(ValueError):
    """Predictions, labels or decisions that cannot be audited: names the input and the fix."""


@dataclass
class Listed:
    """A count with the first few examples: nothing is dropped silently."""
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str, n: int = 1) -> None:
        self.count += n
        if len(self.examples) < N_EXAMPLES:
            self.examples.append(example)


@dataclass
class Predictions:
    """Where the rows are and what they hold; `batches` reads them again on each call."""
    uri: str
    files: list[str]  # full uris of parquet parts, or the one file
    columns: list[str]
    pred_column: str
    config_hash: str | None  # the hash the rows are filtered to (None: no config_hash column)
    rows: int
    cfg: object

    @property
    def has_distributions(self) -> bool:
        return col.PROBS in self.columns and col.LABEL_NAMES in self.columns

    def batches(self, columns: list[str]) -> Iterator[pa.RecordBatch]:
        """Batches of `columns` (those the rows have) of the rows under `config_hash`."""
        want = [c for c in dict.fromkeys(columns + ([col.CONFIG_HASH] if self.config_hash else []))
                if c in self.columns]
        for uri in self.files:
            for b in _file_batches(uri, self.cfg, want):
                if self.config_hash is not None:
                    b = b.filter(pc.equal(b.column(col.CONFIG_HASH), self.config_hash))
                if b.num_rows:
                    yield b


def _file_batches(uri: str, cfg, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
    fs, path = storage.filesystem(uri, cfg)
    if path.lower().endswith(".parquet"):
        with fs.open(path, "rb") as f:
            yield from pq.ParquetFile(f).iter_batches(batch_size=BATCH_ROWS, columns=columns)
        return
    from emodist.evaluate import read_predictions  # small label files: eval's reader, its CSV rules

    table, _ = read_predictions(uri, cfg)
    yield from table.select([c for c in (columns or table.column_names) if c in table.column_names]).to_batches(
        BATCH_ROWS)


def _schema(uri: str, cfg) -> list[str]:
    fs, path = storage.filesystem(uri, cfg)
    if path.lower().endswith(".parquet"):
        with fs.open(path, "rb") as f:
            return pq.ParquetFile(f).schema_arrow.names
    return next(_file_batches(uri, cfg, None)).schema.names


def open_predictions(uri: str, cfg, config_hash: str | None = None, option: str = "--config-hash") -> Predictions:
    """The prediction rows of a run folder or file. Rows of two configs (written with
    `run --new-config`) are refused unless `config_hash` picks one."""
    fs, path = storage.filesystem(uri, cfg)
    folder = RunFolder(uri, cfg) if fs.isdir(path) else None
    if folder is not None:
        files = folder.parts(PREDICTIONS)
        if not files:
            raise AuditInputError(f"{uri}: no {PREDICTIONS}/part-*.parquet inside; pass an `emodist run` output folder")
    elif fs.exists(path):
        files = [uri]
    else:
        raise AuditInputError(f"{uri}: not found; pass an `emodist run` output folder or a csv/parquet/jsonl file")
    columns = _schema(files[0], cfg)
    pred = next((c for c in PRED_COLUMNS if c in columns), None)
    if col.CLIP_ID not in columns or pred is None:
        raise AuditInputError(f"{uri}: predictions need a '{col.CLIP_ID}' column and a label column "
                              f"(one of {PRED_COLUMNS}); columns: {columns}")
    hashes: dict[str, int] = {}
    if folder is not None:
        hashes = folder.config_rows()
    elif col.CONFIG_HASH in columns:
        for b in _file_batches(files[0], cfg, [col.CONFIG_HASH]):
            hash_counts(b, hashes)
    try:  # the one rule of every reader: one config's rows, never two mixed
        chosen = choose_config(uri, hashes, config_hash, option)
    except ConfigChoice as exc:
        raise AuditInputError(str(exc)) from None
    rows = hashes.get(chosen, 0) if chosen is not None else sum(
        b.num_rows for f in files for b in _file_batches(f, cfg, [col.CLIP_ID]))
    return Predictions(uri, files, columns, pred, chosen, rows, cfg)


@dataclass
class Manifest:
    """A manifest's clips: ids (Arrow, for joins), label codes (-1: outside the label set)."""
    uri: str
    ids: pa.Array
    codes: np.ndarray
    labels: tuple[str, ...]
    unknown_labels: Listed
    unreadable_lines: Listed
    duplicate_ids: Listed

    def locate(self, ids: pa.Array) -> np.ndarray:
        """Manifest row of each id, -1 where the manifest lacks it."""
        return pc.index_in(ids.cast(pa.string()), value_set=self.ids).fill_null(-1).to_numpy(
            zero_copy_only=False).astype(np.int64)


def read_labels(uri: str, cfg, labels: tuple[str, ...]) -> Manifest:
    """A manifest read as `run` reads its input (every manifest and split-file format);
    a label outside the label set is listed with the line it came from."""
    from emodist.io.source import open_source

    try:
        source = open_source(uri, cfg)
    except storage.SourceError as exc:
        raise AuditInputError(str(exc)) from None
    if source.format not in ("manifest", "split"):
        raise AuditInputError(f"{uri}: not a manifest or split file ({source.format}); pass a .csv, .parquet, "
                              ".jsonl manifest or a split file")
    code = {lab: i for i, lab in enumerate(labels)}
    chunks: list[pa.Array] = []  # ids as Arrow a chunk at a time: 1M Python strings cost ~70 MB
    ids: list[str] = []
    codes = bytearray()
    unknown, unreadable = Listed(), Listed()
    name = posixpath.basename(uri.rstrip("/"))
    for r in source.rows():
        if r[col.ERROR_STAGE]:
            unreadable.add(r[col.ERROR_MESSAGE].removeprefix("list: "))
            continue
        lab = match_label(r[col.REF_LABEL], labels)
        if lab is None:
            unknown.add(f"{name}: line {r.get('_line')}: {r[col.CLIP_ID]}: label {r[col.REF_LABEL]!r} "
                        f"is not in {list(labels)}")
        ids.append(r[col.CLIP_ID])
        codes.append(255 if lab is None else code[lab])
        if len(ids) == BATCH_ROWS:
            chunks.append(pa.array(ids, pa.string()))
            ids = []
    chunks.append(pa.array(ids, pa.string()))
    all_ids = pa.concat_arrays(chunks)
    if not len(all_ids):
        raise AuditInputError(f"{uri}: no clip listed; pass a manifest with 'uri' and 'label'")
    c = np.frombuffer(bytes(codes), dtype=np.uint8).astype(np.int8)
    # a repeated id: its first line counts, the others are listed
    first = pa.table({"id": all_ids, "i": pa.array(np.arange(len(all_ids)))}).group_by("id").aggregate(
        [("i", "min"), ("i", "count")])
    dup = Listed()
    repeats = first.filter(pc.greater(first.column("i_count"), 1))
    for cid, k in zip(repeats.column("id").to_pylist()[:N_EXAMPLES], repeats.column("i_count").to_pylist()):
        dup.add(cid, k - 1)
    dup.count = int(pc.sum(repeats.column("i_count")).as_py() or 0) - repeats.num_rows
    if repeats.num_rows:
        keep = np.sort(first.column("i_min").to_numpy())
        all_ids, c = all_ids.take(pa.array(keep)), c[keep]
    return Manifest(uri, all_ids, c, labels, unknown, unreadable, dup)


def label_codes(values: pa.Array, labels: tuple[str, ...]) -> np.ndarray:
    """Label-set index of each predicted label (-1: outside the set or empty)."""
    text = values.cast(pa.string())
    uniq = pc.unique(text).to_pylist()
    lookup = {u: labels.index(m) if (m := match_label(u, labels)) else -1 for u in uniq}
    idx = pc.index_in(text, value_set=pa.array(uniq, pa.string())).to_numpy(zero_copy_only=False)
    return np.array([lookup[u] for u in uniq] + [-1], dtype=np.int64)[np.nan_to_num(idx, nan=len(uniq)).astype(np.int64)]


def distributions(batch: pa.RecordBatch, labels: tuple[str, ...], column: str = col.PROBS) -> np.ndarray:
    """(n, L) float64 distributions in label-set order, rows normalised; NaN rows where a
    row has none. Rows that share one label order (the usual case) are mapped at once."""
    n, L = batch.num_rows, len(labels)
    names = batch.column(col.LABEL_NAMES)
    probs = batch.column(column)
    out = np.full((n, L), np.nan)
    lengths = pc.list_value_length(names).fill_null(0).to_numpy(zero_copy_only=False)
    plen = pc.list_value_length(probs).fill_null(0).to_numpy(zero_copy_only=False)
    ok = (lengths > 0) & (lengths == plen)
    if not ok.any():
        return out
    k = int(lengths[ok][0])
    same_k = ok & (lengths == k)
    first = names[int(np.flatnonzero(same_k)[0])].as_py()
    idx = np.flatnonzero(same_k)
    flat_names = pc.list_flatten(names.take(pa.array(idx)))
    if pc.all(pc.equal(flat_names, pa.array(first * len(idx)))).as_py():
        cols = [labels.index(canonical(x)) if canonical(x) in labels else -1 for x in first]
        vals = pc.list_flatten(probs.take(pa.array(idx))).to_numpy(zero_copy_only=False).reshape(len(idx), k)
        rows = np.zeros((len(idx), L))
        for j, c in enumerate(cols):
            if c >= 0:
                rows[:, c] += vals[:, j]
        out[idx] = rows
        rest = np.flatnonzero(ok & ~same_k)
    else:
        rest = np.flatnonzero(ok)
    for i in rest:  # rows of another label order: one at a time
        row = np.zeros(L)
        for nm, v in zip(names[int(i)].as_py(), probs[int(i)].as_py()):
            if canonical(nm) in labels and v is not None:
                row[labels.index(canonical(nm))] += v
        out[i] = row
    s = out.sum(axis=1, keepdims=True)
    bad = ~np.isfinite(s[:, 0]) | (s[:, 0] <= 0) | (np.nanmin(np.where(np.isnan(out), 0, out), axis=1) < 0)
    out[bad] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        return out / s
