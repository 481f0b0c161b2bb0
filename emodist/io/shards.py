"""WebDataset-style tar shards, streamed member by member (never extracted to disk).

Members are grouped into samples by key, the member name up to the first dot of its base
name (`a/000123.mp4` + `a/000123.json` -> key `a/000123`). A sample has one video member
and optionally a label: `.cls` (an index into the configured label set, from 0, or a
word), `.txt` (a word) or `.json` (`{"label": ...}`). A clip retried by uri is named
`shard.tar#member` and read back with `read_member`.
"""
from __future__ import annotations

import json
import posixpath
import re
import tarfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import PurePosixPath

from emodist import storage
from emodist.errors import ClipError
from emodist.io import limits, rows
from emodist.io.lines import LineError, class_index_label
from emodist.io.suffixes import SHARD_SUFFIXES, VIDEO_SUFFIXES, has_suffix
from emodist.labels import canonical


def member_escapes(name: str) -> bool:
    """True when a tar member's name points outside the shard: absolute, a drive, '..'."""
    n = name.replace("\\", "/")
    return n.startswith("/") or bool(re.match(r"^[a-zA-Z]:", n)) or ".." in n.split("/")


def split_key(name: str) -> tuple[str, str]:
    """WebDataset key and extension: 'a/000123.seg.mp4' -> ('a/000123', 'seg.mp4')."""
    folder, base = posixpath.split(name)
    stem, _, ext = base.partition(".")
    return (posixpath.join(folder, stem) if folder else stem), ext.lower()


def _label_of(sample: dict[str, bytes], label_names: Sequence[str]) -> str:
    if "cls" in sample:
        return class_index_label(sample["cls"].decode("utf-8", "replace"), label_names)
    if "json" in sample:
        try:
            meta = json.loads(sample["json"])
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LineError(f"its .json member is not valid JSON ({exc})") from None
        for k in ("label", "emotion", "cls", "class"):
            if isinstance(meta, dict) and meta.get(k) is not None:
                v = meta[k]
                return class_index_label(v, label_names) if isinstance(v, int) else canonical(str(v))
        return ""
    if "txt" in sample:
        return canonical(sample["txt"].decode("utf-8", "replace"))
    return ""


def iter_shard(
    fileobj,
    shard_uri: str,
    *,
    cfg,
    label_names: Sequence[str],
    fail: Callable[[str, str, str], dict],
    ok: Callable[[str, str, str, bytes], dict],
) -> Iterator[dict]:
    """Rows of one tar shard, streamed member by member (`r|*`: no seeking, no extraction).

    `ok(clip_id, uri, label, data)` and `fail(clip_id, uri, message)` build the rows.
    A member whose name escapes the shard, an oversized video, a sample without a video
    and a damaged shard each give one failure row; the rest of the shard is still read.
    """
    seen: set[str] = set()
    key, sample, names = None, {}, {}

    def flush():
        if key is None:
            return None
        if key in seen:
            return fail(key, f"{shard_uri}#{key}", f"duplicate key {key!r} in the shard; keys must be unique and their members adjacent")
        seen.add(key)
        video = next((e for e in sample if not e.startswith("__") and "." + e.rsplit(".", 1)[-1] in VIDEO_SUFFIXES), None)
        if video is None:
            for problem in ("__too_big__", "__not_file__"):
                if problem in sample:
                    return fail(key, f"{shard_uri}#{names[problem]}", sample[problem].decode())
            found = ", ".join(sorted(sample)) or "nothing"
            return fail(key, f"{shard_uri}#{key}", f"sample has no video member (found: {found}); expected e.g. {key}.mp4")
        uri = f"{shard_uri}#{names[video]}"
        try:
            label = _label_of(sample, label_names)
        except LineError as exc:
            return fail(key, uri, f"bad label: {exc}")
        return ok(key, uri, label, sample[video])

    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            for member in tar:
                name = member.name
                if member_escapes(name):
                    # Never read, never written: the name alone becomes a failure row.
                    yield fail(name, f"{shard_uri}#{name}", f"tar member name {name!r} escapes the shard (absolute or '..'); rebuild the shard with relative member names")
                    continue
                if member.isdir():
                    continue
                k, ext = split_key(name)
                if k != key:
                    row = flush()
                    if row is not None:
                        yield row
                    key, sample, names = k, {}, {}
                is_video = "." + ext.rsplit(".", 1)[-1] in VIDEO_SUFFIXES
                if not member.isfile():
                    if is_video:
                        names["__not_file__"] = name
                        sample["__not_file__"] = b"the video member is a link or device, not a regular file; store the video itself in the shard"
                    continue
                too_big = limits.size_problem(member.size, cfg, "video member") if is_video else None
                if too_big:
                    names["__too_big__"] = name
                    sample["__too_big__"] = too_big.encode()
                    continue
                if not is_video and member.size > 1 << 20:
                    continue  # sidecars are small; skip large non-video members unread
                f = tar.extractfile(member)
                sample[ext] = f.read() if f is not None else b""
                names[ext] = name
            row = flush()
            if row is not None:
                yield row
    except (tarfile.TarError, EOFError, OSError) as exc:
        yield fail(
            PurePosixPath(shard_uri.split("://", 1)[-1]).name,
            shard_uri,
            f"tar shard is damaged or truncated ({type(exc).__name__}: {exc}); samples before the damage were read; re-create or re-download the shard",
        )


def shard_rows(uri: str, cfg) -> Iterator[dict]:
    """SOURCE rows of one shard: each sample's video bytes in the `data` column."""
    fs, path = storage.filesystem(uri, cfg)
    try:
        f = fs.open(path, "rb", block_size=8 << 20, cache_type="readahead")
    except Exception as exc:  # noqa: BLE001 - one failure row for the whole shard
        yield rows.fail(PurePosixPath(path).name, uri, str(storage.explain(exc, uri, "reading")))
        return
    # Keys repeat across shards (000000 in each): a clip's id is '<shard>/<key>'.
    shard = shard_name(uri)
    with f:
        yield from iter_shard(f, uri, cfg=cfg, label_names=cfg.label_names,
                              fail=lambda cid, u, msg: rows.fail(f"{shard}/{cid}", u, msg),
                              ok=lambda cid, u, label, data: rows.ok(f"{shard}/{cid}", u, label, data))


def shard_name(uri: str) -> str:
    """'s3://b/train/shard-000001.tar' -> 'shard-000001'."""
    name = rows.name_of(uri)
    for suffix in sorted(SHARD_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def member_uri(uri: str) -> tuple[str, str] | None:
    """('s3://b/shard.tar', 'key.mp4') for a tar member uri ('shard.tar#key.mp4'), else None."""
    base, sep, member = uri.partition("#")
    if sep and member and has_suffix(base, SHARD_SUFFIXES):
        return base, member
    return None


def read_member(shard_uri: str, member: str, cfg) -> bytes:
    """One member's bytes, streaming through the shard (for clips retried by uri)."""
    if member_escapes(member):
        raise ClipError(f"tar member name {member!r} escapes the shard; it is never read")
    fs, path = storage.filesystem(shard_uri, cfg)
    with fs.open(path, "rb", block_size=8 << 20, cache_type="readahead") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
        for m in tar:
            if m.name == member and m.isfile():
                limits.check_size(m.size, cfg, "video member")
                return tar.extractfile(m).read()
    raise ClipError(f"member {member!r} is not in the shard")
