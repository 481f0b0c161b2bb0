"""Find the clips to label: a folder, a glob, or a manifest (csv, parquet, jsonl).

Every clip gets a `clip_id` that stays with it through all stages. It is the manifest's
`clip_id` column when there is one; otherwise the path relative to the listed folder
(or the file name, for manifests and globs) without its extension.
"""
from __future__ import annotations

import posixpath
from pathlib import PurePosixPath

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from emodist import schema as col

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
MANIFEST_SUFFIXES = (".csv", ".parquet", ".jsonl")

CLIPS = pa.schema([(col.CLIP_ID, pa.string()), (col.URI, pa.string()), (col.REF_LABEL, pa.string())])


class SourceError(ValueError):
    """The input cannot be listed: names the input and how to fix it."""


def clip_id_for(uri: str, root: str | None = None) -> str:
    """'/data/dfew/happy/0001.mp4' -> 'happy/0001' under root '/data/dfew', else '0001'."""
    path = uri.split("://", 1)[-1]
    if root is not None:
        root_path = root.split("://", 1)[-1].rstrip("/")
        if path.startswith(root_path + "/"):
            return str(PurePosixPath(path[len(root_path) + 1 :]).with_suffix(""))
    return PurePosixPath(path).stem


def _protocol_prefix(uri: str) -> str:
    return uri.split("://", 1)[0] + "://" if "://" in uri else ""


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
    base = _protocol_prefix(uri) + posixpath.dirname(path)
    uris = []
    for u in table.column(col.URI).to_pylist():
        u = str(u or "").strip()
        if u and "://" not in u and not u.startswith("/"):
            u = posixpath.join(base, u)
        uris.append(u)
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


def list_clips(input_uri: str, **storage_options) -> pa.Table:
    """The clips named by a folder, a glob or a manifest, as (clip_id, uri, ref_label)."""
    fs, path = fsspec.core.url_to_fs(input_uri, **storage_options)
    prefix = _protocol_prefix(input_uri)
    if PurePosixPath(path).suffix.lower() in MANIFEST_SUFFIXES and not fs.isdir(path):
        if not fs.exists(path):
            raise SourceError(f"{input_uri}: manifest not found; check the path")
        return read_manifest(input_uri, **storage_options)
    if fsspec.core.has_magic(path):
        paths, root = sorted(fs.glob(path)), None
    elif fs.isdir(path):
        paths, root = sorted(fs.find(path)), path
    else:
        raise SourceError(
            f"{input_uri}: no such folder, glob or manifest; pass a folder of videos, "
            f"a glob like 'clips/*.mp4', or a manifest ({', '.join(MANIFEST_SUFFIXES)})"
        )
    uris = [prefix + p if prefix else p for p in paths if PurePosixPath(p).suffix.lower() in VIDEO_SUFFIXES]
    if not uris:
        raise SourceError(f"{input_uri}: no videos found (looked for {', '.join(VIDEO_SUFFIXES)})")
    ids = [clip_id_for(u, prefix + root if root else None) for u in uris]
    return pa.Table.from_arrays(
        [pa.array(ids), pa.array(uris), pa.array([""] * len(uris))], schema=CLIPS
    )
