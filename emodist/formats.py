"""Dataset formats, one clip (or one failure) at a time: manifest and split-file lines,
numeric label codes of DFEW / FERV39k / MAFW, and WebDataset-style tar shards streamed
member by member (never extracted to disk).

Split files. The datasets and the code built on them use whitespace-separated lines:
`path num_frames label` (TSN-style lists, e.g. Former-DFER's DFEW_set_1_train.txt) or
`path label` (FERV39k's own `4_setups/All_scenes/train_All.csv`: `Action/Sad/0010 Sad`;
MAFW's own `set_1/train.txt`: `00025.mp4 anger`). A label is a word or a numeric code:
- DFEW, 1..7: happy sad neutral angry surprise disgust fear (DFEW's EmoLabel_DataSplit).
- FERV39k, 0..6: angry disgust fear happy neutral sad surprise. FERV39k itself ships
  words only; this is the alphabetical index that loaders derive from those words. (Some
  repos re-index FERV39k in DFEW's order from 0, e.g. MAE-DFER's preprocess; such files
  are not told apart by content: convert them to words first.)
- MAFW, 1..11: anger disgust fear happiness neutral sadness surprise contempt anxiety
  helplessness disappointment.
Codes of any other label set are refused (which dataset they index is unknown).

Tar shards (WebDataset): members are grouped into samples by key, the member name up to
the first dot of its base name (`a/000123.mp4` + `a/000123.json` -> key `a/000123`).
A sample has one video member and optionally a label: `.cls` (an index into the
configured label set, from 0, or a word), `.txt` (a word) or `.json` (`{"label": ...}`).
"""
from __future__ import annotations

import json
import posixpath
import re
import tarfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import PurePosixPath

from emodist.labels import canonical

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
MANIFEST_SUFFIXES = (".csv", ".parquet", ".jsonl")
SPLIT_SUFFIXES = (".txt",)

LABEL_CODES: dict[str, dict[int, str]] = {
    "dfew": dict(enumerate(("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"), 1)),
    "ferv39k": dict(enumerate(("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"), 0)),
    "mafw": dict(enumerate(
        ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise",
         "contempt", "anxiety", "helplessness", "disappointment"), 1)),
}


class LineError(ValueError):
    """One manifest/split line cannot be used; the message says why and how to fix it."""


def has_suffix(name: str, suffixes: Sequence[str]) -> bool:
    return name.lower().endswith(tuple(suffixes))


def strip_video_suffix(path: str) -> str:
    return path[: -len(PurePosixPath(path).suffix)] if has_suffix(path, VIDEO_SUFFIXES) else path


def natural_key(name: str) -> tuple:
    """Sort '2.jpg' before '10.jpg' (DFEW's frames are not zero-padded)."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t)


# --- labels ---------------------------------------------------------------------------


def label_from_code(token: str, labels: str | Sequence[str]) -> str:
    """A split file's label token as a label name: words are canonicalised, numeric codes
    are mapped with the dataset's own code table (`labels` = 'dfew' | 'ferv39k' | 'mafw')."""
    token = token.strip()
    if not token.lstrip("-").isdigit():
        return canonical(token)
    name = labels.lower() if isinstance(labels, str) else None
    if name not in LABEL_CODES:
        raise LineError(
            f"numeric label code {token} but the label set is {labels!r}; codes are only "
            "known for labels: dfew, ferv39k or mafw (set 'labels'), or write label words"
        )
    table = LABEL_CODES[name]
    code = int(token)
    if code not in table:
        lo, hi = min(table), max(table)
        raise LineError(
            f"label code {code} is not a {name.upper()} code ({lo}..{hi}: "
            + ", ".join(f"{k} {v}" for k, v in table.items()) + ")"
        )
    return table[code]


def class_index_label(value, label_names: Sequence[str]) -> str:
    """A WebDataset `.cls` value: an index into the configured label set (from 0) or a word."""
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        i = int(text)
        if not 0 <= i < len(label_names):
            raise LineError(f"class index {i} is outside the label set (0..{len(label_names) - 1})")
        return label_names[i]
    return canonical(text)


# --- split files and manifests --------------------------------------------------------


def looks_like_split(first_line: str) -> bool:
    """True for 'path num_frames label' or 'path label' lines (no header, no commas)."""
    tokens = first_line.split()
    if "," in first_line or len(tokens) not in (2, 3):
        return False
    return len(tokens) == 2 or tokens[1].isdigit()


def parse_split_line(line: str, labels: str | Sequence[str]) -> tuple[str, str]:
    """(path, label name) of one split line; LineError says what is wrong."""
    tokens = line.split()
    if len(tokens) == 3:
        if not tokens[1].isdigit():
            raise LineError(f"num_frames {tokens[1]!r} is not a whole number (expected 'path num_frames label')")
        path, label = tokens[0], tokens[2]
    elif len(tokens) == 2:
        path, label = tokens
    else:
        raise LineError(
            f"expected 'path num_frames label' or 'path label', found {len(tokens)} fields: {line.strip()[:120]!r}"
        )
    return path, label_from_code(label, labels)


def resolve_uri(u: str, base: str) -> str:
    """A manifest/split path made absolute: relative paths resolve against `base` (a
    folder URI or path); URIs and absolute paths stay as they are."""
    u = u.strip()
    if u and "://" not in u and not u.startswith("/"):
        return posixpath.join(base, u) if base else u
    return u


def split_clip_id(path: str) -> str:
    """Relative split paths keep their folders (FERV39k's 'Action/Sad/0010' repeats
    '0010' across folders); absolute ones are named by their last component."""
    path = path.strip()
    if "://" in path or path.startswith("/"):
        return PurePosixPath(strip_video_suffix(path.split("://", 1)[-1])).name
    return strip_video_suffix(path).strip("/")


def parse_jsonl_line(line: str) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise LineError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise LineError(f"expected a JSON object with a 'uri' key, got {type(obj).__name__}")
    return obj


# --- tar shards -----------------------------------------------------------------------


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
    max_bytes: int,
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
                if is_video and member.size > max_bytes:
                    names["__too_big__"] = name
                    sample["__too_big__"] = (
                        f"video member is {member.size / 2**20:.1f} MiB, over the limit "
                        f"input.max_file_mb = {max_bytes / 2**20:g}; raise input.max_file_mb to accept it"
                    ).encode()
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
