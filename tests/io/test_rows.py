"""io/rows.py: clip ids from uris."""
from __future__ import annotations

import itertools
from pathlib import PurePosixPath

from emodist.io.rows import relative_id


def _pathlib_id(uri: str, base: str) -> str:
    """The id as pathlib gives it (the definition relative_id keeps without a Path per clip)."""
    path = uri.split("://", 1)[-1]
    root = base.split("://", 1)[-1].rstrip("/") if base else ""
    rel = path[len(root) + 1:] if root and path.startswith(root + "/") else path.lstrip("/")
    return str(PurePosixPath(rel).with_suffix("")) if PurePosixPath(rel).suffix else rel


def test_relative_id_is_pathlibs_answer_for_every_spelling():
    parts = ["a", ".h", "x.mp4", "x.", "a.b.c", "", ".", "..", "f..g", "x.tar.gz", "..mp4"]
    seen = set()
    for n in (1, 2, 3):
        for combo in itertools.product(parts, repeat=n):
            for base, pre in itertools.product(["", "/root", "s3://b/root", "/root/"],
                                               ["/", "./", "", "s3://b/", "/root/", "s3://b/root/", "//"]):
                uri = pre + "/".join(combo)
                got = relative_id(uri, base)
                assert got == _pathlib_id(uri, base), (uri, base)
                seen.add(got)
    assert {"Scene/Class/0001", "happy/0001"} <= {relative_id("/d/Scene/Class/0001.mp4", "/d"),
                                                  relative_id("s3://b/dfew/happy/0001.avi", "s3://b/dfew")}
    assert len(seen) > 500  # the spellings reach many distinct ids, not one answer
