"""The rows the input layer hands to the pipeline, and the ids clips carry through it.

One row per clip (or per line or member that could not be read): `clip_id`, `uri`,
`ref_label`, the error columns (empty when the row is fine) and `data`, the clip's bytes
when it came out of a tar shard (null for clips read by uri). Rows that fail here carry
`error_stage = "list"`; the stages pass them through to the failure parts.
"""
from __future__ import annotations

import posixpath
from collections.abc import Iterator
from pathlib import PurePosixPath

import pyarrow as pa

from emodist import schema as col
from emodist.storage import protocol_prefix, scrub

DATA = "data"  # a clip's bytes when it comes from a tar shard; null for clips read by URI
LIST_STAGE = "list"

CLIPS = pa.schema([(col.CLIP_ID, pa.string()), (col.URI, pa.string()), (col.REF_LABEL, pa.string())])
SOURCE = pa.schema(list(CLIPS) + [
    (col.ERROR_STAGE, pa.string()), (col.ERROR_TYPE, pa.string()), (col.ERROR_MESSAGE, pa.string()),
    (DATA, pa.large_binary()),
])

# A block of rows holds at most this many rows or bytes (tar shards carry clip bytes).
BLOCK_ROWS = 256
BLOCK_BYTES = 64 << 20


def ok(clip_id: str, uri: str, label: str = "", data: bytes | None = None) -> dict:
    return {col.CLIP_ID: clip_id, col.URI: uri, col.REF_LABEL: label or "",
            col.ERROR_STAGE: "", col.ERROR_TYPE: "", col.ERROR_MESSAGE: "", DATA: data}


def fail(clip_id: str, uri: str, message: str) -> dict:
    return {col.CLIP_ID: clip_id, col.URI: scrub(uri), col.REF_LABEL: "",
            col.ERROR_STAGE: LIST_STAGE, col.ERROR_TYPE: "SourceError",
            col.ERROR_MESSAGE: scrub(f"{LIST_STAGE}: {uri}: {message}"), DATA: None}


def blocks(rows: Iterator[dict], block_rows: int = BLOCK_ROWS) -> Iterator[pa.Table]:
    """SOURCE tables of at most `block_rows` rows (or BLOCK_BYTES of clip bytes); at
    least one (empty) table, so a read task always yields a block with the schema."""
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


def clip_id_for(uri: str, root: str | None = None) -> str:
    """'/data/dfew/happy/0001.mp4' -> 'happy/0001' under root '/data/dfew', else '0001'."""
    path = uri.split("://", 1)[-1]
    if root is not None:
        root_path = root.split("://", 1)[-1].rstrip("/")
        if path.startswith(root_path + "/"):
            return str(PurePosixPath(path[len(root_path) + 1 :]).with_suffix(""))
    return PurePosixPath(path).stem


def folder_id(folder: str, root: str) -> str:
    """A frame folder's id: its path under root ('happy/00001'), or its name if it is root."""
    folder, root = folder.rstrip("/"), root.rstrip("/")
    if folder.startswith(root + "/"):
        return folder[len(root) + 1 :]
    return PurePosixPath(folder).name


def dirname_uri(uri: str) -> str:
    return protocol_prefix(uri) + posixpath.dirname(uri.split("://", 1)[-1])


def name_of(uri: str) -> str:
    """The last path component of a uri or path."""
    return PurePosixPath(uri.split("://", 1)[-1]).name
