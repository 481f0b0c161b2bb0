"""Find the clips to label, at any scale: folders or globs of videos or of frame folders,
manifests (csv, parquet, jsonl), split files of DFEW / FERV39k / MAFW, and WebDataset-style
tar shards, on local disk or object storage (fsspec: s3://, gs://, ...).

Every clip gets a `clip_id` that stays with it through all stages: the manifest's
`clip_id` column when there is one; otherwise the path relative to the listed folder
without its extension (the file name for manifests and globs; the path as written,
for split files; the sample key, for tar shards). The same clips stored locally or in
a bucket get the same ids.

How the pipeline reads an input (`open_source`, then `ClipSource.dataset()`):
- The driver only checks access and decides the format: one metadata request and, for
  a folder, one bounded listing page (`input.format: auto` looks at suffixes, and at the
  first line of a .csv to tell a manifest from a split file). Errors here are
  `SourceError`s that name the input and what to do; no Ray work has started.
- Listing a folder or glob runs in a Ray read task that walks the tree (S3: one
  ListObjectsV2 page of 1000 keys at a time; local: directory by directory) and yields
  arrow blocks of one decode batch, up to LISTING_AHEAD_BLOCKS ahead of the decode
  actors; decoding starts with the first block. The driver never holds the listing.
- Manifests and split files are read by Ray tasks, one per file, in parallel: parquet
  batch by batch; csv, jsonl and split files with a streaming line reader so that a
  line that does not parse becomes a failure row with its line number instead of
  aborting the run (Ray's `read_csv` can only abort or drop). Every read yields blocks
  of one decode batch, so that all decode actors get work (`ray.data.read_parquet`
  yields a row group per block: often the whole manifest, for one actor).
- Tar shards are read by one Ray task per shard, member by member, without extracting
  anything to disk; the clip's bytes travel in the `data` column to the decode stage.
Rows that fail here (a bad line, an unsafe tar member) carry `error_stage = "list"` and
become failure rows; the stages pass them through.

`list_clips` / `read_manifest` build one arrow table in-process, for small local use.
"""
from __future__ import annotations

import csv
import io
import itertools
import os
import posixpath
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import PurePosixPath
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from emodist import formats as fm
from emodist import schema as col
from emodist import storage
from emodist.storage import SourceError, StorageError, scrub  # noqa: F401 - re-exported

VIDEO_SUFFIXES = fm.VIDEO_SUFFIXES
IMAGE_SUFFIXES = fm.IMAGE_SUFFIXES
MANIFEST_SUFFIXES = fm.MANIFEST_SUFFIXES
SHARD_SUFFIXES = fm.SHARD_SUFFIXES

DATA = "data"  # a clip's bytes when it comes from a tar shard; null for clips read by URI

CLIPS = pa.schema([(col.CLIP_ID, pa.string()), (col.URI, pa.string()), (col.REF_LABEL, pa.string())])
SOURCE = pa.schema(list(CLIPS) + [
    (col.ERROR_STAGE, pa.string()), (col.ERROR_TYPE, pa.string()), (col.ERROR_MESSAGE, pa.string()),
    (DATA, pa.large_binary()),
])

# Listing, manifest and shard reading wait on storage, not on the CPU: a small share
# keeps them schedulable next to the stage actors (on 2 CPUs a 1-CPU read task would
# wait forever for a CPU the actors hold).
READ_NUM_CPUS = 0.25
# Blocks (of one decode batch each) a listing or manifest read task may hold ready
# ahead of the decode pool. Ray Data's default for a streaming read is 2: the decode
# actors then got one batch per turn of the executor's loop and sat idle half the time
# (75 -> 150-200 clips/s at 224 px with 2 actors; benchmarks/RESULTS.md). These rows
# are a few hundred bytes, so thousands of clips ahead cost little; Ray's own
# file-listing operator turns the limit off altogether. Tar shards carry the clips'
# bytes and keep Ray's default.
LISTING_AHEAD_BLOCKS = 1024
BLOCK_ROWS = 256
BLOCK_BYTES = 64 << 20
PEEK_ITEMS = 1000
LIST_STAGE = "list"


# --- rows -----------------------------------------------------------------------------


def _ok(clip_id: str, uri: str, label: str = "", data: bytes | None = None) -> dict:
    return {col.CLIP_ID: clip_id, col.URI: uri, col.REF_LABEL: label or "",
            col.ERROR_STAGE: "", col.ERROR_TYPE: "", col.ERROR_MESSAGE: "", DATA: data}


def _fail(clip_id: str, uri: str, message: str) -> dict:
    return {col.CLIP_ID: clip_id, col.URI: scrub(uri), col.REF_LABEL: "",
            col.ERROR_STAGE: LIST_STAGE, col.ERROR_TYPE: "SourceError",
            col.ERROR_MESSAGE: scrub(f"{LIST_STAGE}: {uri}: {message}"), DATA: None}


def _blocks(rows: Iterator[dict], block_rows: int = BLOCK_ROWS) -> Iterator[pa.Table]:
    buf: list[dict] = []
    nbytes, produced = 0, False
    for r in rows:
        buf.append(r)
        nbytes += len(r[DATA] or b"")
        if len(buf) >= block_rows or nbytes >= BLOCK_BYTES:
            yield pa.Table.from_pylist(buf, schema=SOURCE)
            buf, nbytes, produced = [], 0, True
    if buf or not produced:
        yield pa.Table.from_pylist(buf, schema=SOURCE)


# --- ids ------------------------------------------------------------------------------


def clip_id_for(uri: str, root: str | None = None) -> str:
    """'/data/dfew/happy/0001.mp4' -> 'happy/0001' under root '/data/dfew', else '0001'."""
    path = uri.split("://", 1)[-1]
    if root is not None:
        root_path = root.split("://", 1)[-1].rstrip("/")
        if path.startswith(root_path + "/"):
            return str(PurePosixPath(path[len(root_path) + 1 :]).with_suffix(""))
    return PurePosixPath(path).stem


def _folder_id(folder: str, root: str) -> str:
    """A frame folder's id: its path under root ('happy/00001'), or its name if it is root."""
    folder, root = folder.rstrip("/"), root.rstrip("/")
    if folder.startswith(root + "/"):
        return folder[len(root) + 1 :]
    return PurePosixPath(folder).name


def _dirname_uri(uri: str) -> str:
    return storage.protocol_prefix(uri) + posixpath.dirname(uri.split("://", 1)[-1])


# --- walking storage ------------------------------------------------------------------


def _is_s3(fs) -> bool:
    protos = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return any(p in ("s3", "s3a") for p in protos) and hasattr(fs, "call_s3")


def _is_local(fs) -> bool:
    protos = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return any(p in ("file", "local") for p in protos)


def iter_files(fs, path: str) -> Iterator[str]:
    """Every file under `path` (fsspec paths), streamed: on S3 one ListObjectsV2 page
    (1000 keys) at a time, locally one directory at a time (sorted), elsewhere via find."""
    path = path.rstrip("/")
    if _is_s3(fs):
        bucket_name, _, prefix = path.partition("/")
        kw: dict[str, Any] = {"Bucket": bucket_name, "Prefix": prefix + "/" if prefix else ""}
        while True:
            out = fs.call_s3("list_objects_v2", **kw)
            for c in out.get("Contents", []):
                if not c["Key"].endswith("/"):
                    yield f"{bucket_name}/{c['Key']}"
            if not out.get("IsTruncated"):
                return
            kw["ContinuationToken"] = out["NextContinuationToken"]
    elif _is_local(fs):
        for dirpath, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                yield posixpath.join(dirpath, name)
    else:
        yield from sorted(fs.find(path))


def _listing_rows(uri: str, cfg, pattern: str | None, mode: str) -> Iterator[dict]:
    """Clips under a folder (or a glob's folder, filtered by the glob): video files, and
    folders of images (frame folders). mode: auto (both; a folder holding videos is
    not itself a frame folder), videos, or frames."""
    fs, root = storage.filesystem(uri, cfg)
    root = root.rstrip("/")
    regex = re.compile(fsspec.utils.glob_translate(pattern)) if pattern else None
    prefix = storage.protocol_prefix(uri)
    root_uri = prefix + root
    want_videos, want_frames = mode in ("auto", "videos"), mode in ("auto", "frames")
    emitted: set[str] = set()
    state = {"dir": None, "images": 0, "videos": 0}

    def close_dir() -> Iterator[dict]:
        d = state["dir"]
        if (d is not None and want_frames and state["images"] and d not in emitted
                and not (mode == "auto" and state["videos"])
                and (regex is None or regex.match(d) or regex.match(d + "/"))):
            emitted.add(d)
            yield _ok(_folder_id(d, root) if regex is None else PurePosixPath(d).name, prefix + d)

    for p in iter_files(fs, root):
        d, name = posixpath.split(p)
        if d != state["dir"]:
            yield from close_dir()
            state.update(dir=d, images=0, videos=0)
        if fm.has_suffix(name, VIDEO_SUFFIXES):
            state["videos"] += 1
            if want_videos and (regex is None or regex.match(p)):
                u = prefix + p
                yield _ok(clip_id_for(u, None if regex else root_uri), u)
        elif fm.has_suffix(name, IMAGE_SUFFIXES):
            state["images"] += 1
    yield from close_dir()


# --- manifests and split files --------------------------------------------------------


def _base_for(uri: str, cfg) -> str:
    root = getattr(getattr(cfg, "input", None), "root", None)
    return root.rstrip("/") if root else _dirname_uri(uri)


def _labels_spec(cfg):
    return getattr(cfg, "labels", "dfew")


def _csv_rows(text, uri: str, base: str) -> Iterator[dict]:
    name = PurePosixPath(uri.split("://", 1)[-1]).name
    reader = csv.reader(text)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return
    except csv.Error as exc:
        yield _fail(f"{name}:1", uri, f"line 1: the header does not parse ({exc})")
        return
    if col.URI not in header:
        yield _fail(name, uri, f"manifest has no 'uri' column (columns: {header}); add a 'uri' column with one video path per row")
        return
    iu = header.index(col.URI)
    ic = header.index(col.CLIP_ID) if col.CLIP_ID in header else None
    il = header.index("label") if "label" in header else None
    last = reader.line_num
    while True:
        start = last + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            last = reader.line_num
            yield _fail(f"{name}:{start}", uri, f"line {start}: does not parse as CSV ({exc}); fix the quoting")
            continue
        last = reader.line_num
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            yield _fail(
                f"{name}:{start}", uri,
                f"line {start}: expected {len(header)} fields ({','.join(header)}), found {len(row)}; "
                "quote fields that contain commas",
            )
            continue
        u = row[iu].strip()
        if not u:
            yield _fail(f"{name}:{start}", uri, f"line {start}: empty uri")
            continue
        u = fm.resolve_uri(u, base)
        cid = row[ic].strip() if ic is not None and row[ic].strip() else clip_id_for(u)
        yield _ok(cid, u, row[il].strip() if il is not None else "")


def _jsonl_rows(text, uri: str, base: str) -> Iterator[dict]:
    name = PurePosixPath(uri.split("://", 1)[-1]).name
    for n, line in enumerate(text, 1):
        if not line.strip():
            continue
        try:
            obj = fm.parse_jsonl_line(line)
            u = str(obj.get(col.URI) or "").strip()
            if not u:
                raise fm.LineError("no 'uri' key (or it is empty)")
        except fm.LineError as exc:
            yield _fail(f"{name}:{n}", uri, f"line {n}: {exc}")
            continue
        u = fm.resolve_uri(u, base)
        cid = str(obj[col.CLIP_ID]) if obj.get(col.CLIP_ID) not in (None, "") else clip_id_for(u)
        label = obj.get("label")
        yield _ok(cid, u, "" if label is None else str(label))


def _split_rows(text, uri: str, base: str, labels) -> Iterator[dict]:
    name = PurePosixPath(uri.split("://", 1)[-1]).name
    for n, line in enumerate(text, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            path, label = fm.parse_split_line(line, labels)
        except fm.LineError as exc:
            yield _fail(f"{name}:{n}", uri, f"line {n}: {exc}")
            continue
        yield _ok(fm.split_clip_id(path), fm.resolve_uri(path, base), label)


def _text_manifest_rows(uri: str, cfg, kind: str) -> Iterator[dict]:
    fs, path = storage.filesystem(uri, cfg)
    base = _base_for(uri, cfg)
    with fs.open(path, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
        if kind == "csv":
            yield from _csv_rows(text, uri, base)
        elif kind == "jsonl":
            yield from _jsonl_rows(text, uri, base)
        else:
            yield from _split_rows(text, uri, base, _labels_spec(cfg))


def _normalize_manifest_table(table: pa.Table, base: str) -> pa.Table:
    """A parquet manifest batch as SOURCE rows (relative uris resolved, ids filled)."""
    uris = [fm.resolve_uri(str(u or ""), base) for u in table.column(col.URI).to_pylist()]
    ids = (table.column(col.CLIP_ID).to_pylist() if col.CLIP_ID in table.column_names else [None] * len(uris))
    labels = table.column("label").to_pylist() if "label" in table.column_names else [None] * len(uris)
    rows = []
    for u, cid, label in zip(uris, ids, labels, strict=True):
        if not u:
            rows.append(_fail(str(cid or ""), base, "a row has an empty uri"))
            continue
        rows.append(_ok(str(cid) if cid not in (None, "") else clip_id_for(u), u, "" if label is None else str(label)))
    return pa.Table.from_pylist(rows, schema=SOURCE)


def _manifest_kind(uri: str, fs, path: str) -> str:
    """csv | jsonl | parquet | split for one manifest-like file; a .csv whose first line is
    'path [num_frames] label' (no header) is a split file."""
    low = path.lower()
    if low.endswith(".parquet"):
        return "parquet"
    if low.endswith(".jsonl"):
        return "jsonl"
    if low.endswith(fm.SPLIT_SUFFIXES):
        return "split"
    first = _first_line(fs, path)
    return "split" if fm.looks_like_split(first) and col.URI not in first else "csv"


def _first_line(fs, path: str) -> str:
    with fs.open(path, "rb", block_size=1 << 16) as f:
        head = f.read(1 << 16).decode("utf-8", "replace")
    for line in head.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return line
    return ""


# --- tar shards -----------------------------------------------------------------------


def _shard_rows(uri: str, cfg) -> Iterator[dict]:
    fs, path = storage.filesystem(uri, cfg)
    max_bytes = int(cfg.input.max_file_mb * 2**20)
    try:
        f = fs.open(path, "rb", block_size=8 << 20, cache_type="readahead")
    except Exception as exc:  # noqa: BLE001 - one failure row for the whole shard
        yield _fail(PurePosixPath(path).name, uri, str(storage.explain(exc, uri, "reading")))
        return
    with f:
        yield from fm.iter_shard(
            f, uri, max_bytes=max_bytes, label_names=cfg.label_names,
            fail=_fail, ok=lambda cid, u, label, data: _ok(cid, u, label, data),
        )


# --- Ray --------------------------------------------------------------------------------


def _run_rows(make_rows: Callable[[], Iterator[dict]], block_rows: int) -> Iterator[pa.Table]:
    yield from _blocks(make_rows(), block_rows)


def _make_datasource(tasks: list[tuple[Callable[[], Iterator[dict]], str]], block_rows: int):
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    class ClipsDatasource(Datasource):
        """One Ray read task per (row generator, name): a listing, a manifest, a shard."""

        def estimate_inmemory_data_size(self):
            return None

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None, **_):
            return [
                ReadTask(partial(_run_rows, fn, block_rows),
                         BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=[name]),
                         schema=SOURCE)
                for fn, name in tasks
            ]

        def get_name(self) -> str:
            return "ListClips"

    return ClipsDatasource()


def _read(datasource, ahead: bool):
    """ray.data.read_datasource; with `ahead`, each read task may run LISTING_AHEAD_BLOCKS
    blocks ahead of its consumer."""
    import ray

    if not ahead:
        return ray.data.read_datasource(datasource, num_cpus=READ_NUM_CPUS)
    with warnings.catch_warnings():
        # Deprecated since Ray 2.60 (removal planned for 2.64), but no named parameter
        # sets a read task's generator backpressure yet. tests/test_sources.py checks
        # that the read operator still carries it after a Ray upgrade.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        return ray.data.read_datasource(
            datasource, num_cpus=READ_NUM_CPUS,
            # two objects per block: the block and its metadata
            ray_remote_args={"_generator_backpressure_num_objects": 2 * LISTING_AHEAD_BLOCKS})


@dataclass
class ClipSource:
    """What the driver learned about an input, cheaply; `dataset()` reads it in Ray."""

    uri: str
    format: str  # listing | manifest | split | webdataset | table
    cfg: Any
    files: list[str] = field(default_factory=list)
    pattern: str | None = None
    table: pa.Table | None = None

    @property
    def count(self) -> int | None:
        """Number of clips when known before reading (small inputs), else None."""
        return self.table.num_rows if self.table is not None else None

    def row_generators(self) -> list[tuple[Callable[[], Iterator[dict]], str]]:
        """(picklable generator of SOURCE rows, name) per read task."""
        cfg = self.cfg
        if self.format == "listing":
            return [(partial(_listing_rows, self.uri, cfg, self.pattern, cfg.input.format), self.uri)]
        if self.format == "webdataset":
            return [(partial(_shard_rows, u, cfg), u) for u in self.files]
        out = []
        for u in self.files:
            fs, path = storage.filesystem(u, cfg)
            kind = "split" if self.format == "split" else _manifest_kind(u, fs, path)
            if kind == "parquet":
                out.append((partial(_parquet_rows, u, cfg), u))
            else:
                out.append((partial(_text_manifest_rows, u, cfg, kind), u))
        return out

    def rows(self) -> Iterator[dict]:
        """All SOURCE rows, in this process (small inputs; tests)."""
        if self.table is not None:
            yield from self.table.to_pylist()
            return
        for make_rows, _ in self.row_generators():
            yield from make_rows()

    def dataset(self):
        """The Ray dataset of SOURCE rows; listing, parsing and shard reading run in Ray
        read tasks (`READ_NUM_CPUS` each), in parallel across files."""
        import ray

        cfg = self.cfg
        # Blocks of one decode batch: every decode actor gets work from the start
        # (one big block would go to the first actor that is up: +25% steady rate).
        block_rows = max(1, cfg.decode.batch_size)
        if self.table is not None:
            t = self.table
            return ray.data.from_arrow([t.slice(s, block_rows) for s in range(0, max(t.num_rows, 1), block_rows)])
        # Parquet manifests too: read_parquet gives a row group per block (a whole
        # manifest, often), which one decode actor would take alone.
        return _read(_make_datasource(self.row_generators(), block_rows), ahead=self.format != "webdataset")


def _parquet_rows(uri: str, cfg) -> Iterator[dict]:
    fs, path = storage.filesystem(uri, cfg)
    base = _base_for(uri, cfg)
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        if col.URI not in names:
            yield _fail(PurePosixPath(path).name, uri, f"manifest has no 'uri' column (columns: {names})")
            return
        columns = [c for c in (col.URI, col.CLIP_ID, "label") if c in names]
        for batch in pf.iter_batches(batch_size=BLOCK_ROWS, columns=columns):
            yield from _normalize_manifest_table(pa.Table.from_batches([batch]), base).to_pylist()


# --- deciding the format, in the driver -------------------------------------------------


FORMATS = ("auto", "videos", "manifest", "split", "frames", "webdataset")


def _input_cfg(cfg):
    if cfg is None:
        from emodist.config import Config

        return Config()
    return cfg


def _magic_root(path: str) -> str:
    parts = path.split("/")
    out = []
    for p in parts:
        if fsspec.core.has_magic(p):
            break
        out.append(p)
    return "/".join(out)


def _kind(fs, path: str) -> str | None:
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    return "dir" if info.get("type") == "directory" else "file"


def _files_with(fs, path: str, uri: str, suffixes) -> list[str]:
    prefix = storage.protocol_prefix(uri)
    return [prefix + p for p in iter_files(fs, path) if fm.has_suffix(p, suffixes)]


def _not_found(uri: str, fs=None) -> SourceError:
    b = storage.bucket(uri)
    if fs is not None and b:
        try:
            missing_bucket = not fs.exists(b)
        except Exception:  # noqa: BLE001 - only a better message is at stake
            missing_bucket = False
        if missing_bucket:
            return StorageError(f"{uri}: bucket '{b}' does not exist; check the bucket name and storage.endpoint_url")
    return SourceError(
        f"{uri}: no such folder, glob or manifest; pass a folder of videos or frame folders, "
        f"a glob like 'clips/*.mp4', a manifest ({', '.join(MANIFEST_SUFFIXES)}), a split file "
        f"(.txt), or tar shards"
    )


def open_source(input_uri: str, cfg=None) -> ClipSource:
    """Check that `input_uri` can be read and decide its format (`cfg.input.format`);
    cheap: no listing beyond one page. Raises SourceError / StorageError."""
    cfg = _input_cfg(cfg)
    try:
        fs, path = storage.filesystem(input_uri, cfg)
        return _plan(fs, path, input_uri, cfg)
    except SourceError:
        raise
    except (ImportError, ValueError) as exc:
        raise SourceError(f"{input_uri}: cannot open: {scrub(str(exc))}") from None
    except Exception as exc:  # noqa: BLE001 - storage errors get a clear message
        raise storage.explain(exc, input_uri, "reading") from None


def _plan(fs, path: str, uri: str, cfg) -> ClipSource:
    fmt = cfg.input.format
    prefix = storage.protocol_prefix(uri)
    if fsspec.core.has_magic(path):
        root = _magic_root(path)
        if _kind(fs, root) is None:
            raise _not_found(uri, fs)
        if fmt == "webdataset" or (fmt == "auto" and fm.has_suffix(path, SHARD_SUFFIXES)):
            files = [prefix + p for p in sorted(fs.glob(path)) if fm.has_suffix(p, SHARD_SUFFIXES)]
            return _checked(ClipSource(uri, "webdataset", cfg, files=files), uri, "tar shards")
        if fmt in ("manifest", "split") or (fmt == "auto" and fm.has_suffix(path, MANIFEST_SUFFIXES + fm.SPLIT_SUFFIXES)):
            files = [prefix + p for p in sorted(fs.glob(path))]
            return _checked(ClipSource(uri, "split" if fmt == "split" else "manifest", cfg, files=files), uri, "manifests")
        return ClipSource(prefix + root, "listing", cfg, pattern=path)

    kind = _kind(fs, path)
    if kind is None:
        raise _not_found(uri, fs)
    if kind == "file":
        return _plan_file(fs, path, uri, cfg, fmt)

    # a folder
    if fmt == "webdataset":
        return _checked(ClipSource(uri, "webdataset", cfg, files=_files_with(fs, path, uri, SHARD_SUFFIXES)), uri, "tar shards")
    if fmt in ("manifest", "split"):
        suffixes = MANIFEST_SUFFIXES if fmt == "manifest" else fm.SPLIT_SUFFIXES + (".csv",)
        return _checked(ClipSource(uri, fmt, cfg, files=_files_with(fs, path, uri, suffixes)), uri, f"{fmt} files")
    peek = list(itertools.islice(iter_files(fs, path), PEEK_ITEMS))
    complete = len(peek) < PEEK_ITEMS
    has = {k: any(fm.has_suffix(p, s) for p in peek) for k, s in
           (("video", VIDEO_SUFFIXES), ("image", IMAGE_SUFFIXES), ("shard", SHARD_SUFFIXES),
            ("manifest", MANIFEST_SUFFIXES + fm.SPLIT_SUFFIXES))}
    if fmt == "auto" and has["shard"] and not has["video"] and not has["image"]:
        return _checked(ClipSource(uri, "webdataset", cfg, files=_files_with(fs, path, uri, SHARD_SUFFIXES)), uri, "tar shards")
    want = {"auto": ("video", "image"), "videos": ("video",), "frames": ("image",)}[fmt]
    if complete and not any(has[k] for k in want):
        hint = "; it holds manifest/split files: pass one of them as the input" if has["manifest"] else ""
        videos = f"no videos found (looked for {', '.join(VIDEO_SUFFIXES)})"
        frames = f"no frame folders found (folders of {', '.join(IMAGE_SUFFIXES)} images)"
        what = {"auto": f"{videos} and {frames.removeprefix('no ')}", "videos": videos, "frames": frames}[fmt]
        raise SourceError(f"{uri}: {what}{hint}")
    return ClipSource(uri, "listing", cfg)


def _plan_file(fs, path: str, uri: str, cfg, fmt: str) -> ClipSource:
    if fmt == "webdataset" or (fmt == "auto" and fm.has_suffix(path, SHARD_SUFFIXES)):
        return ClipSource(uri, "webdataset", cfg, files=[uri])
    if fmt in ("auto", "videos") and fm.has_suffix(path, VIDEO_SUFFIXES):
        table = pa.Table.from_pylist([_ok(clip_id_for(uri), uri)], schema=SOURCE)
        return ClipSource(uri, "table", cfg, table=table)
    if fmt == "split" or (fmt == "auto" and fm.has_suffix(path, fm.SPLIT_SUFFIXES)):
        return ClipSource(uri, "split", cfg, files=[uri])
    if fmt in ("auto", "manifest") and fm.has_suffix(path, MANIFEST_SUFFIXES):
        kind = _manifest_kind(uri, fs, path)
        if kind == "split" and fmt == "auto":
            return ClipSource(uri, "split", cfg, files=[uri])
        _check_manifest_header(fs, path, uri, kind)
        return ClipSource(uri, "manifest", cfg, files=[uri])
    raise SourceError(
        f"{uri}: not a video, manifest ({', '.join(MANIFEST_SUFFIXES)}), split file (.txt) or tar shard "
        f"for input.format={fmt}; set input.format (auto, videos, manifest, split, frames, webdataset)"
    )


def _check_manifest_header(fs, path: str, uri: str, kind: str) -> None:
    """A manifest without a 'uri' column is a mistake in the whole file: say so up front."""
    if kind == "csv":
        header = next(csv.reader([_first_line(fs, path)]), [])
        names = [h.strip() for h in header]
    elif kind == "parquet":
        with fs.open(path, "rb") as f:
            names = pq.ParquetFile(f).schema_arrow.names
    else:
        return
    if col.URI not in names:
        raise SourceError(
            f"{uri}: manifest has no 'uri' column (columns: {names}); "
            "add a 'uri' column with one video path per row"
        )


def _checked(source: ClipSource, uri: str, what: str) -> ClipSource:
    if not source.files:
        raise SourceError(f"{uri}: no {what} found")
    return source


# --- small, in-process ----------------------------------------------------------------


def read_manifest(uri: str, **storage_options) -> pa.Table:
    """A manifest as a table of (clip_id, uri, ref_label); relative uris are resolved
    against the manifest's folder."""
    fs, path = fsspec.core.url_to_fs(uri, **storage_options)
    suffix = PurePosixPath(path).suffix.lower()
    with fs.open(path, "rb") as f:
        if suffix == ".csv":
            # Ids like '00001' and label codes must stay strings, not be guessed as numbers.
            names = pacsv.read_csv(f, read_options=pacsv.ReadOptions(skip_rows_after_names=1 << 30)).column_names
            f.seek(0)
            table = pacsv.read_csv(f, convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=False))
        elif suffix == ".parquet":
            table = pq.read_table(f)
        elif suffix == ".jsonl":
            table = pajson.read_json(f)
        else:
            raise SourceError(f"{uri}: not a manifest; use one of {MANIFEST_SUFFIXES}")
    if col.URI not in table.column_names:
        raise SourceError(
            f"{uri}: manifest has no 'uri' column (columns: {table.column_names}); "
            "add a 'uri' column with one video path per row"
        )
    base = storage.protocol_prefix(uri) + posixpath.dirname(path)
    uris = [fm.resolve_uri(str(u or ""), base) for u in table.column(col.URI).to_pylist()]
    if col.CLIP_ID in table.column_names:
        ids = [str(x) for x in table.column(col.CLIP_ID).to_pylist()]
    else:
        ids = [clip_id_for(u) for u in uris]
    labels = (
        [str(x) if x is not None else "" for x in table.column("label").to_pylist()]
        if "label" in table.column_names
        else [""] * len(uris)
    )
    return pa.Table.from_arrays([pa.array(ids), pa.array(uris), pa.array(labels)], schema=CLIPS)


def list_clips(input_uri: str, cfg=None) -> pa.Table:
    """The clips of any supported input as (clip_id, uri, ref_label), in this process
    (small inputs). A row that fails to list raises SourceError; the pipeline instead
    streams the input through Ray (`open_source(...).dataset()`) and keeps going."""
    source = open_source(input_uri, cfg)
    rows = []
    for r in source.rows():
        if r[col.ERROR_STAGE]:
            raise SourceError(r[col.ERROR_MESSAGE].removeprefix(f"{LIST_STAGE}: "))
        rows.append({k: r[k] for k in CLIPS.names})
    if not rows:
        raise SourceError(f"{input_uri}: no clips found")
    return pa.Table.from_pylist(rows, schema=CLIPS)
