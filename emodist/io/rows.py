"""The rows the input layer hands to the pipeline, and the ids clips carry through it.

One row per clip (or per line or member that could not be read): `clip_id`, `uri`,
`ref_label`, the error columns (empty when the row is fine) and `data`, the clip's bytes
when it came out of a tar shard (null for clips read by uri). Rows that fail here carry
`error_stage = "list"` and travel packed in carrier rows (emodist/output/carry.py).

Clip ids are unique by construction: a clip's path under the listed folder, the glob's
folder, or the manifest's folder (`input.root`), without its extension ('Action/Sad/0010':
FERV39k repeats '0010' in every class folder); a manifest's `clip_id` column where it has
one (checked for repeats at start); `<shard>/<key>` for a tar shard's samples.
"""
from __future__ import annotations

import posixpath
from pathlib import PurePosixPath

import pyarrow as pa

from emodist.output import carry
from emodist import schema as col
from emodist.storage import CREDENTIALS_IN_URI, protocol_prefix, scrub, userinfo, without_userinfo

DATA = "data"  # a clip's bytes when it comes from a tar shard; null for clips read by URI
LIST_STAGE = "list"

CLIPS = pa.schema([(col.CLIP_ID, pa.string()), (col.URI, pa.string()), (col.REF_LABEL, pa.string())])
SOURCE = pa.schema(list(CLIPS) + [
    (col.ERROR_STAGE, pa.string()), (col.ERROR_TYPE, pa.string()), (col.ERROR_MESSAGE, pa.string()),
    (DATA, pa.large_binary()), (carry.COLUMN, pa.large_binary()), (carry.PRIOR_ATTEMPTS, pa.int64()),
])

# A block holds at most this many clips to decode (decode.batch_size), or bytes of clip
# data (tar shards carry the clips' bytes); failed rows travel in carriers of at most
# CARRY_ROWS rows.
BLOCK_ROWS = 256
BLOCK_BYTES = 64 << 20
CARRY_ROWS = 4096


# The fix a message names when one clip_id is given to two different clips.
ONE_ID_EACH = "give each clip its own clip_id, or leave the column out (ids then come from the paths)"


def ok(clip_id: str, uri: str, label: str = "", data: bytes | None = None, line: int | None = None) -> dict:
    """A clip's row; `line`: where a manifest states it (for messages; not a column).
    A uri with user-info (s3://KEY:SECRET@bucket/...) is not read: the row is a failure
    whose id, uri and message hold no credentials (storage.CREDENTIALS_IN_URI)."""
    if userinfo(uri):
        return fail(clip_id, uri, f"{f'line {line}: ' if line else ''}{CREDENTIALS_IN_URI}")
    return {col.CLIP_ID: clip_id, col.URI: uri, col.REF_LABEL: label or "",
            col.ERROR_STAGE: "", col.ERROR_TYPE: "", col.ERROR_MESSAGE: "", DATA: data, carry.COLUMN: None,
            carry.PRIOR_ATTEMPTS: 0, "_line": line}


def fail(clip_id: str, uri: str, message: str) -> dict:
    # An id made from a uri with user-info holds it too ('KEY:SECRET@bucket/a'): both lose it.
    clip_id, uri = without_userinfo(clip_id, uri), without_userinfo(uri, uri)
    return {col.CLIP_ID: scrub(clip_id), col.URI: scrub(uri), col.REF_LABEL: "",
            col.ERROR_STAGE: LIST_STAGE, col.ERROR_TYPE: "SourceError",
            col.ERROR_MESSAGE: scrub(f"{LIST_STAGE}: {uri}: {message}"), DATA: None, carry.COLUMN: None,
            carry.PRIOR_ATTEMPTS: 0}


def table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SOURCE)


def clip_id_for(uri: str, root: str | None = None) -> str:
    """'/data/dfew/happy/0001.mp4' -> 'happy/0001' under root '/data/dfew', else '0001'."""
    path = uri.split("://", 1)[-1]
    if root is not None and path.startswith(root.split("://", 1)[-1].rstrip("/") + "/"):
        return relative_id(uri, root)
    return PurePosixPath(path).stem


def relative_id(uri: str, base: str) -> str:
    """A clip's id from its uri: its path under `base` without the extension
    ('v/x.mp4' -> 'v/x'); outside `base`, its whole path ('/abs/y.mp4' -> 'abs/y')."""
    path = uri.split("://", 1)[-1]
    root = base.split("://", 1)[-1].rstrip("/") if base else ""
    rel = path[len(root) + 1:] if root and path.startswith(root + "/") else path.lstrip("/")
    name = rel[rel.rfind("/") + 1:]
    if name not in ("", ".", "..") and "//" not in rel and "/./" not in rel and not rel.startswith("./"):
        # already in pathlib's normal form: pathlib's answer without a Path per clip
        dot = name.rfind(".")
        return rel[:len(rel) - len(name) + dot] if 0 < dot < len(name) - 1 else rel
    return str(PurePosixPath(rel).with_suffix("")) if PurePosixPath(rel).suffix else rel


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
