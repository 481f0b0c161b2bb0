"""What a file is, by its name: the suffixes of videos, images, manifests and shards."""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePosixPath

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
MANIFEST_SUFFIXES = (".csv", ".parquet", ".jsonl")
SPLIT_SUFFIXES = (".txt",)


def has_suffix(name: str, suffixes: Sequence[str]) -> bool:
    return name.lower().endswith(tuple(suffixes))


def strip_video_suffix(path: str) -> str:
    return path[: -len(PurePosixPath(path).suffix)] if has_suffix(path, VIDEO_SUFFIXES) else path


def natural_key(name: str) -> tuple:
    """Sort '2.jpg' before '10.jpg' (DFEW's frames are not zero-padded)."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t)
