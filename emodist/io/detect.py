"""Deciding, in the driver and cheaply, what an input is (`plan`): a folder or glob of
videos or frame folders, manifests, split files, or tar shards (`input.format: auto` looks at
suffixes, at the first line of a .csv, and at one bounded listing page of a folder).
Errors here are SourceErrors that name the input and what to do; no Ray work has started.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa

from emodist import storage
from emodist.io import manifests, rows, walk
from emodist.io.suffixes import (IMAGE_SUFFIXES, MANIFEST_SUFFIXES, SHARD_SUFFIXES, SPLIT_SUFFIXES,
                                 VIDEO_SUFFIXES, has_suffix)
from emodist.storage import SourceError, StorageError

PEEK_ITEMS = 1000  # the one listing page the driver looks at


@dataclass
class Detected:
    """What the driver decided an input is (`plan`); io/source.py's ClipSource reads it."""

    uri: str
    format: str  # listing | manifest | split | webdataset | table
    files: list[str] = field(default_factory=list)
    pattern: str | None = None
    table: pa.Table | None = None


def plan(input_uri: str, cfg) -> Detected:
    """What `input_uri` is (`cfg.input.format`), cheaply: no listing beyond one page.
    Raises SourceError / StorageError, and what the filesystem raises (io/source.py's
    open_source words those)."""
    fs, path = storage.filesystem(input_uri, cfg)
    return _plan(fs, path, input_uri, cfg)


def no_clips(uri: str, source) -> str:
    """Why an input with nothing in it is refused, worded for its kind: zero clips are
    refused at start whatever the input is (an empty folder always was)."""
    if source.format in ("manifest", "split"):
        what = "manifest" if source.format == "manifest" else "split file"
        return (f"{uri}: no clips: the {what}{'s hold' if len(source.files) > 1 else ' holds'} no clip line "
                "(at most a header); add one line per clip")
    if source.format == "webdataset":
        return f"{uri}: no clips: the tar shards hold no members; check the shards"
    if source.pattern is not None:
        return (f"{uri}: no clips: the glob matches no video or frame folder; check the pattern "
                f"(quote it, e.g. 'clips/*.mp4', so that the shell does not expand it)")
    return f"{uri}: no clips found; pass a folder of videos or frame folders"


def _magic_root(path: str) -> str:
    out = []
    for p in path.split("/"):
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


def _empty_prefix(uri: str, cfg) -> SourceError:
    """An object-store prefix with nothing under it: object stores have no folders, so
    'no such folder' or 'no videos found' would send the user looking for the wrong thing."""
    shown = uri.rstrip("/") + "/"
    lister = {"s3": "aws s3 ls", "s3a": "aws s3 ls", "gs": "gcloud storage ls", "gcs": "gcloud storage ls"}
    cmd = lister.get(storage.protocol(uri), "")
    endpoint = getattr(getattr(cfg, "storage", None), "endpoint_url", None)
    if cmd.startswith("aws") and endpoint:
        cmd += f" --endpoint-url {endpoint}"
    how = f"list it ({cmd} {shown})" if cmd else "list it"
    return SourceError(f"{shown}: nothing found under this prefix (no objects); check the prefix for a typo and {how}")


def _not_found(uri: str, fs=None, cfg=None) -> SourceError:
    b = storage.bucket(uri)
    if fs is not None and b:
        try:
            missing_bucket = not fs.exists(b)
        except Exception:  # noqa: BLE001 - only a better message is at stake
            missing_bucket = False
        if missing_bucket:
            return StorageError(f"{uri}: bucket '{b}' does not exist; check the bucket name and storage.endpoint_url")
        known = MANIFEST_SUFFIXES + SPLIT_SUFFIXES + SHARD_SUFFIXES + VIDEO_SUFFIXES
        if not fsspec.core.has_magic(uri) and not has_suffix(uri.rstrip("/"), known):
            return _empty_prefix(uri, cfg)  # a prefix, not a missing object
    return SourceError(
        f"{uri}: no such folder, glob or manifest; pass a folder of videos or frame folders, "
        f"a glob like 'clips/*.mp4', a manifest ({', '.join(MANIFEST_SUFFIXES)}), a split file "
        f"(.txt), or tar shards"
    )


def _checked(source: Detected, uri: str, what: str) -> Detected:
    if not source.files:
        raise SourceError(f"{uri}: no {what} found")
    return source


def _plan(fs, path: str, uri: str, cfg) -> Detected:
    fmt = cfg.input.format
    prefix = storage.protocol_prefix(uri)
    if fsspec.core.has_magic(path):
        root = _magic_root(path)
        if _kind(fs, root) is None:
            raise _not_found(uri, fs)
        if fmt == "webdataset" or (fmt == "auto" and has_suffix(path, SHARD_SUFFIXES)):
            files = [prefix + p for p in sorted(fs.glob(path)) if has_suffix(p, SHARD_SUFFIXES)]
            return _checked(Detected(uri, "webdataset", files=files), uri, "tar shards")
        if fmt in ("manifest", "split") or (fmt == "auto" and has_suffix(path, MANIFEST_SUFFIXES + SPLIT_SUFFIXES)):
            files = [prefix + p for p in sorted(fs.glob(path))]
            return _checked(Detected(uri, "split" if fmt == "split" else "manifest", files=files), uri, "manifests")
        return Detected(prefix + root, "listing", pattern=path)

    kind = _kind(fs, path)
    if kind is None:
        raise _not_found(uri, fs, cfg)
    if kind == "file":
        return _plan_file(fs, path, uri, cfg, fmt)

    # a folder
    if fmt == "webdataset":
        return _checked(Detected(uri, "webdataset", files=walk.files_with(fs, path, uri, SHARD_SUFFIXES)),
                        uri, "tar shards")
    if fmt in ("manifest", "split"):
        suffixes = MANIFEST_SUFFIXES if fmt == "manifest" else SPLIT_SUFFIXES + (".csv",)
        return _checked(Detected(uri, fmt, files=walk.files_with(fs, path, uri, suffixes)), uri, f"{fmt} files")
    peek = list(itertools.islice(walk.iter_files(fs, path), PEEK_ITEMS))
    complete = len(peek) < PEEK_ITEMS
    has = {k: any(has_suffix(p, s) for p in peek) for k, s in
           (("video", VIDEO_SUFFIXES), ("image", IMAGE_SUFFIXES), ("shard", SHARD_SUFFIXES),
            ("manifest", MANIFEST_SUFFIXES + SPLIT_SUFFIXES))}
    if fmt == "auto" and has["shard"] and not has["video"] and not has["image"]:
        return _checked(Detected(uri, "webdataset", files=walk.files_with(fs, path, uri, SHARD_SUFFIXES)),
                        uri, "tar shards")
    want = {"auto": ("video", "image"), "videos": ("video",), "frames": ("image",)}[fmt]
    if complete and not peek and storage.bucket(uri):
        raise _empty_prefix(uri, cfg)  # only folder markers under it
    if complete and not any(has[k] for k in want):
        hint = "; it holds manifest/split files: pass one of them as the input" if has["manifest"] else ""
        videos = f"no videos found (looked for {', '.join(VIDEO_SUFFIXES)})"
        frames = f"no frame folders found (folders of {', '.join(IMAGE_SUFFIXES)} images)"
        what = {"auto": f"{videos} and {frames}", "videos": videos, "frames": frames}[fmt]
        raise SourceError(f"{uri}: {what}{hint}")
    return Detected(uri, "listing")


def _plan_file(fs, path: str, uri: str, cfg, fmt: str) -> Detected:
    if fmt == "webdataset" or (fmt == "auto" and has_suffix(path, SHARD_SUFFIXES)):
        return Detected(uri, "webdataset", files=[uri])
    if fmt in ("auto", "videos") and has_suffix(path, VIDEO_SUFFIXES):
        table = pa.Table.from_pylist([rows.ok(rows.clip_id_for(uri), uri)], schema=rows.SOURCE)
        return Detected(uri, "table", table=table)
    if fmt == "split" or (fmt == "auto" and has_suffix(path, SPLIT_SUFFIXES)):
        return Detected(uri, "split", files=[uri])
    if fmt in ("auto", "manifest") and has_suffix(path, MANIFEST_SUFFIXES):
        kind = manifests.manifest_kind(fs, path)
        if kind == "split" and fmt == "auto":
            return Detected(uri, "split", files=[uri])
        manifests.check_header(fs, path, uri, kind)
        return Detected(uri, "manifest", files=[uri])
    raise SourceError(
        f"{uri}: not a video, manifest ({', '.join(MANIFEST_SUFFIXES)}), split file (.txt) or tar shard "
        f"for input.format={fmt}; set input.format (auto, videos, manifest, split, frames, webdataset)"
    )
