"""Opening one clip for decoding, once: a local file, an object in a bucket, a tar member
(bytes from the shard reader, or `shard.tar#member` by uri), with the size limit checked
before anything is decoded.

A handle gives the same bytes to every reader of the clip without fetching them twice:
the container probe (PyAV), then the CPU decoder or the GPU one (torchcodec). Objects up
to WHOLE_READ_BYTES are fetched with one GET and read from memory; larger ones are
streamed through fsspec's read-ahead cache (both decoders seek in them).
"""
from __future__ import annotations

import errno
import io
import os
import stat
from dataclasses import dataclass
from typing import IO

from emodist import storage
from emodist.errors import ClipError
from emodist.io import limits, shards

WHOLE_READ_BYTES = 64 << 20

# A clip's path that no decoder could fix, said as such (not "re-encode it").
LINK_LOOP = ("a symbolic link that loops (it leads back to itself through links); point the link at the "
             "video file, or remove it from the input")
NOT_READABLE = ("permission denied: this user cannot read the file; make it readable (chmod a+r) or run as a "
                "user who can")

# What a path in an input folder can be besides a regular file (os.stat's mode tests).
_NOT_REGULAR = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


@dataclass
class ClipHandle:
    uri: str
    size: int
    path: str | None = None  # a local file, opened by name
    data: bytes | None = None  # the whole clip in memory
    stream: IO[bytes] | None = None  # a large object, streamed (seekable)

    def for_pyav(self):
        """What av.open takes: a path, or a file-like object at its start."""
        if self.path is not None:
            return self.path
        if self.data is not None:
            return io.BytesIO(self.data)
        self.stream.seek(0)
        return self.stream

    def for_torchcodec(self):
        """What torchcodec's VideoDecoder takes: a path, bytes, or a file-like object."""
        if self.path is not None:
            return self.path
        if self.data is not None:
            return self.data
        self.stream.seek(0)
        return self.stream

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()

    def __enter__(self) -> ClipHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_clip(uri: str, cfg, data: bytes | None = None) -> ClipHandle:
    """The clip at `uri` (or its bytes, for a member read from a shard), size-checked."""
    if data is None:
        member = shards.member_uri(uri)
        if member is not None:
            data = shards.read_member(*member, cfg)
    if data is not None:
        if len(data) == 0:
            raise ClipError("empty member (0 bytes); re-create the shard without it")
        limits.check_size(len(data), cfg, "video member")
        return ClipHandle(uri, len(data), data=data)
    if storage.is_local(uri):
        path = uri.removeprefix("file://")
        try:
            st = os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ClipError(LINK_LOOP) from None
            raise
        if not os.access(path, os.R_OK):
            raise ClipError(NOT_READABLE)
        # Checked before anything opens it: opening a named pipe waits for a writer forever,
        # and its size of 0 would call it an empty file.
        kind = next((what for test, what in _NOT_REGULAR if test(st.st_mode)), None)
        if kind is not None:
            raise ClipError(
                f"not a regular file but {kind}; skipped unread: replace it with the video file "
                "or move it out of the input"
            )
        size = st.st_size
        if size == 0:
            raise ClipError("empty file (0 bytes); re-export or remove the clip")
        limits.check_size(size, cfg)
        return ClipHandle(uri, size, path=path)
    fs, path = storage.filesystem(uri, cfg)
    f = fs.open(path, "rb", block_size=8 << 20, cache_type="readahead")
    try:
        if f.size == 0:
            raise ClipError("empty object (0 bytes); re-upload or remove the clip")
        limits.check_size(f.size, cfg, "object")
        if f.size <= WHOLE_READ_BYTES:
            with f:
                return ClipHandle(uri, f.size, data=f.read())
        return ClipHandle(uri, f.size, stream=f)
    except BaseException:
        f.close()
        raise


def is_dir(uri: str, cfg) -> bool:
    if storage.is_local(uri):
        return os.path.isdir(uri.removeprefix("file://"))
    fs, path = storage.filesystem(uri, cfg)
    return fs.isdir(path)
