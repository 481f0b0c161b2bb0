"""Listing folders and globs, streamed: video files, and folders of images (frame folders).

On S3 one ListObjectsV2 page (1000 keys) at a time; locally one directory at a time,
sorted; elsewhere fsspec's find. The listing runs in a Ray read task (source.py): the
driver never holds it.
"""
from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterator
from typing import Any

import fsspec

from emodist import storage
from emodist.io import rows
from emodist.io.suffixes import IMAGE_SUFFIXES, VIDEO_SUFFIXES, has_suffix


def _protocols(fs) -> tuple:
    return fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)


def is_s3(fs) -> bool:
    return any(p in ("s3", "s3a") for p in _protocols(fs)) and hasattr(fs, "call_s3")


def is_local_fs(fs) -> bool:
    return any(p in ("file", "local") for p in _protocols(fs))


def iter_files(fs, path: str) -> Iterator[str]:
    """Every file under `path` (fsspec paths), streamed."""
    path = path.rstrip("/")
    if is_s3(fs):
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
    elif is_local_fs(fs):
        for dirpath, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                yield posixpath.join(dirpath, name)
    else:
        yield from sorted(fs.find(path))


def files_with(fs, path: str, uri: str, suffixes) -> list[str]:
    """The uris of the files under `path` with one of `suffixes` (small folders)."""
    prefix = storage.protocol_prefix(uri)
    return [prefix + p for p in iter_files(fs, path) if has_suffix(p, suffixes)]


def listing_rows(uri: str, cfg, pattern: str | None, mode: str) -> Iterator[dict]:
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
            yield rows.ok(rows.folder_id(d, root), prefix + d)

    for p in iter_files(fs, root):
        d, name = posixpath.split(p)
        if d != state["dir"]:
            yield from close_dir()
            state.update(dir=d, images=0, videos=0)
        if has_suffix(name, VIDEO_SUFFIXES):
            state["videos"] += 1
            if want_videos and (regex is None or regex.match(p)):
                u = prefix + p
                yield rows.ok(rows.clip_id_for(u, root_uri), u)
        elif has_suffix(name, IMAGE_SUFFIXES):
            state["images"] += 1
    yield from close_dir()
