"""Manifests (csv, jsonl, parquet) and split files (DFEW / FERV39k / MAFW): one reader,
used by `run` (in Ray read tasks), and by `eval`, `diagnose` and `finetune` (in process,
`source.read_manifest`), with the same rules everywhere:

- relative uris resolve against `input.root`, else the manifest's own folder;
- a manifest's `clip_id` column wins; otherwise the id is the uri's path under that
  folder without its extension (`rows.relative_id`), for split files too;
- csv, jsonl and split files are read with a streaming line reader, so a line that does
  not parse becomes one failure row with its line number (not an aborted run);
- parquet is read batch by batch, the needed columns only.
`tabular_batches` reads the same files as whole Arrow batches with every column, for
tools that copy rows unchanged (`emodist sample`).
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import PurePosixPath

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from emodist import schema as col
from emodist import storage
from emodist.io import lines, rows
from emodist.io.suffixes import SPLIT_SUFFIXES
from emodist.storage import SourceError

LABEL = "label"
TABULAR_SUFFIXES = (".csv", ".parquet", ".jsonl")
BATCH_ROWS = 65_536


def no_uri_column(names) -> str:
    return (f"manifest has no 'uri' column (columns: {list(names)}); "
            "add a 'uri' column with one video path per row")


def base_for(uri: str, cfg) -> str:
    """What relative paths in the manifest at `uri` resolve against."""
    root = cfg.input.root
    return storage.normal_uri(root) if root else rows.dirname_uri(storage.normal_uri(uri))


def first_line(fs, path: str) -> str:
    """The first line that is neither blank nor a comment (one bounded read)."""
    with fs.open(path, "rb", block_size=1 << 16) as f:
        head = f.read(1 << 16).decode("utf-8", "replace")
    for line in head.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return line
    return ""


def manifest_kind(fs, path: str) -> str:
    """csv | jsonl | parquet | split for one manifest-like file; a .csv whose first line is
    'path [num_frames] label' (no header) is a split file."""
    low = path.lower()
    if low.endswith(".parquet"):
        return "parquet"
    if low.endswith(".jsonl"):
        return "jsonl"
    if low.endswith(SPLIT_SUFFIXES):
        return "split"
    first = first_line(fs, path)
    return "split" if lines.looks_like_split(first) and col.URI not in first else "csv"


def has_id_column(fs, path: str) -> bool:
    """Whether the manifest states its own clip ids (a `clip_id` column or key)."""
    kind = manifest_kind(fs, path)
    if kind == "parquet":
        with fs.open(path, "rb") as f:
            return col.CLIP_ID in pq.ParquetFile(f).schema_arrow.names
    if kind == "csv":
        return col.CLIP_ID in [h.strip() for h in next(csv.reader([first_line(fs, path)]), [])]
    if kind == "jsonl":
        return f'"{col.CLIP_ID}"' in first_line(fs, path)
    return False


def bad_uri_type(schema: pa.Schema) -> str | None:
    """Why a parquet manifest's 'uri' column cannot hold paths (ints, bytes: every row
    would fail as 'not found'), or None when it holds strings."""
    t = schema.field(col.URI).type
    value = t.value_type if pa.types.is_dictionary(t) else t
    if pa.types.is_string(value) or pa.types.is_large_string(value) or pa.types.is_string_view(value):
        return None
    return f"column '{col.URI}' is {t}; it must hold strings (paths or URLs): write it as a string column"


def check_header(fs, path: str, uri: str, kind: str) -> None:
    """A manifest without a 'uri' column (or, in parquet, with one that holds no strings)
    is a mistake in the whole file: say so up front."""
    schema = None
    if kind == "csv":
        names = [h.strip() for h in next(csv.reader([first_line(fs, path)]), [])]
    elif kind == "parquet":
        with fs.open(path, "rb") as f:
            schema = pq.ParquetFile(f).schema_arrow
        names = schema.names
    else:
        return
    if col.URI not in names:
        raise SourceError(f"{uri}: {no_uri_column(names)}")
    if schema is not None and (why := bad_uri_type(schema)):
        raise SourceError(f"{uri}: {why}")


# A text manifest larger than this is read by several read tasks, one byte range each
# (a 10-million-line manifest by one task took ~16 minutes to list); at most MAX_SPANS.
# Each range holds whole lines (whole records for CSV: no range starts inside quotes).
SPAN_BYTES = 8 << 20
MAX_SPANS = 256
_SCAN_BYTES = 8 << 20


def spans(fs, path: str, kind: str, span_bytes: int | None = None) -> list[tuple[int, int | None, int]]:
    """(start byte, end byte or None for the end of the file, number of the first line)
    ranges that together hold every line of a csv, jsonl or split file once, each about
    `span_bytes`. One pass over the file at C speed (counts of newlines and quotes): a
    newline ends a CSV record only where the quotes before it are balanced (RFC 4180's
    escaped quote is two quotes, which keeps the balance; a stray quote inside an unquoted
    field, which RFC 4180 forbids, would shift it)."""
    span_bytes = span_bytes or SPAN_BYTES
    size = fs.size(path) if kind != "parquet" else 0
    if kind == "parquet" or not size or size <= span_bytes:
        return [(0, None, 1)]
    parts = min(MAX_SPANS, -(-size // span_bytes))
    targets = [size * j // parts for j in range(1, parts)]
    bounds: list[tuple[int, int]] = []  # (byte after a record's newline, its line number)
    pos = newlines = quotes = 0
    with fs.open(path, "rb", block_size=_SCAN_BYTES) as f:
        while targets:
            chunk = f.read(_SCAN_BYTES)
            if not chunk:
                break
            end = pos + len(chunk)
            i = 0
            while targets and targets[0] < end:
                p = chunk.find(b"\n", max(i, targets[0] - pos))
                if p < 0:
                    break  # the next record ends in a later chunk
                i = p + 1
                if kind == "csv" and (quotes + chunk.count(b'"', 0, p)) % 2:
                    continue  # a newline inside a quoted field
                at = pos + p + 1
                bounds.append((at, newlines + chunk.count(b"\n", 0, p + 1) + 1))
                targets = [t for t in targets if t >= at]
            quotes += chunk.count(b'"') if kind == "csv" else 0
            newlines += chunk.count(b"\n")
            pos = end
    bounds = [b for b in bounds if b[0] < size]
    starts = [(0, 1)] + bounds
    return [(a, starts[k + 1][0] if k + 1 < len(starts) else None, line) for k, (a, line) in enumerate(starts)]


class _Range(io.RawIOBase):
    """Bytes [start, end) of an open binary file, as a raw stream."""

    def __init__(self, f, start: int, end: int | None):
        self.f, self.left = f, None if end is None else end - start
        f.seek(start)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = len(b) if self.left is None else min(len(b), self.left)
        data = self.f.read(n) if n else b""
        b[: len(data)] = data
        if self.left is not None:
            self.left -= len(data)
        return len(data)


def manifest_rows(uri: str, cfg, kind: str | None = None, span: tuple[int, int | None, int] = (0, None, 1)
                  ) -> Iterator[dict]:
    """SOURCE rows of one manifest or split file (`kind`: as manifest_kind decides);
    `span`: only the lines of one range of it (`spans`), numbered as in the whole file."""
    fs, path = storage.filesystem(uri, cfg)
    kind = kind or manifest_kind(fs, path)
    base = base_for(uri, cfg)
    if kind == "parquet":
        yield from _parquet_rows(fs, path, uri, base)
        return
    start, end, line = span
    header = None
    if kind == "csv" and start > 0:  # a later range: the header comes from the file's first record
        with fs.open(path, "rb") as raw:
            header = next(csv.reader(io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")), [])
    with fs.open(path, "rb") as raw:
        stream = io.BufferedReader(_Range(raw, start, end), 1 << 16) if (start or end is not None) else raw
        text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")
        if kind == "csv":
            yield from _csv_rows(text, uri, base, header, line - 1)
        elif kind == "jsonl":
            yield from _jsonl_rows(text, uri, base, line)
        else:
            yield from _split_rows(text, uri, base, cfg.labels, line)


def csv_lines(reader, header: list[str], offset: int = 0) -> Iterator[tuple[int, list[str] | None, str | None]]:
    """(line number, fields, None) for each non-blank line after the header of a
    `csv.reader`, or (line number, None, the problem and its fix) for a line that does not
    parse or has another number of fields than the header: one bad line never stops the
    others. Line numbers count physical lines (a quoted field may span several), plus
    `offset` (the lines before a range of the file)."""
    last = reader.line_num
    while True:
        start = last + 1 + offset
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            last = reader.line_num
            yield start, None, f"line {start}: does not parse as CSV ({exc}); fix the quoting"
            continue
        last = reader.line_num
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            yield start, None, (f"line {start}: expected {len(header)} fields ({','.join(header)}), found {len(row)}; "
                                "quote fields that contain commas")
            continue
        yield start, row, None


def _csv_rows(text, uri: str, base: str, header: list[str] | None = None, offset: int = 0) -> Iterator[dict]:
    """`header`: given for a later range of the file (whose first range says what is wrong
    with a bad header); `offset`: the lines before the range."""
    name = rows.name_of(uri)
    reader = csv.reader(text)
    if header is not None:
        header = [h.strip() for h in header]
        if col.URI not in header:
            return
    else:
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            return
        except csv.Error as exc:
            yield rows.fail(f"{name}:1", uri, f"line 1: the header does not parse ({exc})")
            return
        if col.URI not in header:
            yield rows.fail(name, uri, no_uri_column(header))
            return
    iu = header.index(col.URI)
    ic = header.index(col.CLIP_ID) if col.CLIP_ID in header else None
    il = header.index(LABEL) if LABEL in header else None
    for start, row, problem in csv_lines(reader, header, offset):
        if problem:
            yield rows.fail(f"{name}:{start}", uri, problem)
            continue
        u = row[iu].strip()
        if not u:
            yield rows.fail(f"{name}:{start}", uri, f"line {start}: empty uri")
            continue
        u = lines.resolve_uri(u, base)
        cid = row[ic].strip() if ic is not None and row[ic].strip() else rows.relative_id(u, base)
        yield rows.ok(cid, u, row[il].strip() if il is not None else "", line=start)


def _jsonl_rows(text, uri: str, base: str, first: int = 1) -> Iterator[dict]:
    name = rows.name_of(uri)
    for n, line in enumerate(text, first):
        if not line.strip():
            continue
        try:
            obj = lines.parse_jsonl_line(line)
            u = str(obj.get(col.URI) or "").strip()
            if not u:
                raise lines.LineError("no 'uri' key (or it is empty)")
        except lines.LineError as exc:
            yield rows.fail(f"{name}:{n}", uri, f"line {n}: {exc}")
            continue
        u = lines.resolve_uri(u, base)
        cid = str(obj[col.CLIP_ID]) if obj.get(col.CLIP_ID) not in (None, "") else rows.relative_id(u, base)
        label = obj.get(LABEL)
        yield rows.ok(cid, u, "" if label is None else str(label), line=n)


def _split_rows(text, uri: str, base: str, labels, first: int = 1) -> Iterator[dict]:
    name = rows.name_of(uri)
    for n, line in enumerate(text, first):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            path, label = lines.parse_split_line(line, labels)
        except lines.LineError as exc:
            yield rows.fail(f"{name}:{n}", uri, f"line {n}: {exc}")
            continue
        u = lines.resolve_uri(path, base)
        yield rows.ok(rows.relative_id(u, base), u, label, line=n)


def _parquet_rows(fs, path: str, uri: str, base: str) -> Iterator[dict]:
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        if col.URI not in names:
            yield rows.fail(rows.name_of(path), uri, no_uri_column(names))
            return
        if why := bad_uri_type(pf.schema_arrow):  # one row for the file, not one per clip
            yield rows.fail(rows.name_of(path), uri, why)
            return
        columns = [c for c in (col.URI, col.CLIP_ID, LABEL) if c in names]
        offset = 0
        for batch in pf.iter_batches(batch_size=rows.BLOCK_ROWS, columns=columns):
            yield from _table_rows(pa.Table.from_batches([batch]), uri, base, offset)
            offset += batch.num_rows


def _table_rows(table: pa.Table, uri: str, base: str, offset: int) -> Iterator[dict]:
    """A parquet manifest batch as SOURCE rows (relative uris resolved, ids filled)."""
    uris = [lines.resolve_uri(str(u or ""), base) for u in table.column(col.URI).to_pylist()]
    ids = (table.column(col.CLIP_ID).to_pylist() if col.CLIP_ID in table.column_names else [None] * len(uris))
    labels = table.column(LABEL).to_pylist() if LABEL in table.column_names else [None] * len(uris)
    for k, (u, cid, label) in enumerate(zip(uris, ids, labels, strict=True)):
        if not u:
            yield rows.fail(f"{rows.name_of(uri)}:row{offset + k + 1}", uri, f"row {offset + k + 1}: empty uri")
            continue
        yield rows.ok(str(cid) if cid not in (None, "") else rows.relative_id(u, base), u,
                      "" if label is None else str(label), line=offset + k + 1)


# --- whole tables, for tools that keep every column -----------------------------------


def tabular_suffix(uri: str) -> str:
    suffix = PurePosixPath(uri.split("://", 1)[-1]).suffix.lower()
    if suffix not in TABULAR_SUFFIXES:
        raise ValueError(f"{uri}: manifest format is chosen by suffix; use one of {TABULAR_SUFFIXES}")
    return suffix


def tabular_batches(uri: str, cfg, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The manifest at `uri` as Arrow batches with every column (or `columns`), csv values
    as text: for tools that copy rows unchanged (`emodist sample`); millions of rows
    stream in constant memory. `run` reads manifests row by row instead (manifest_rows)."""
    fs, path = storage.filesystem(uri, cfg)
    suffix = tabular_suffix(uri)
    if not fs.exists(path):
        raise ValueError(f"{uri}: manifest not found; check the path")
    if suffix == ".csv":  # every column as text, so values are copied unchanged ('0001' stays)
        with fs.open(path, "rb") as f:
            names = pacsv.open_csv(f).schema.names
    with fs.open(path, "rb") as f:
        if suffix == ".parquet":
            yield from pq.ParquetFile(f).iter_batches(batch_size=BATCH_ROWS, columns=columns)
        elif suffix == ".csv":
            opts = pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                        include_columns=columns, strings_can_be_null=False)
            yield from pacsv.open_csv(f, read_options=pacsv.ReadOptions(block_size=1 << 22),
                                      convert_options=opts)
        else:
            for b in pajson.open_json(f, read_options=pajson.ReadOptions(block_size=1 << 22)):
                yield b.select(columns) if columns else b
