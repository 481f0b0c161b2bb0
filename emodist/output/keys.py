"""Clip keys as 64-bit hashes, and sets of them that stay small: 8 bytes a key in sorted
numpy arrays, never a Python object per clip.

A clip is identified by its `clip_id` and its `uri` together (two folders may both hold
`clip_00000`; one manifest line may repeat). `KeyMap` remembers, for each id seen, the
uri it was seen with, in levels of sorted arrays merged as they grow (a log-structured
merge), so adding n keys costs O(n log n) and memory 16 bytes a key: read tasks keep one
per input file. `DiskKeyMap` is the same map on local disk (SQLite, a bounded page cache)
for the driver, whose memory must not grow with the run (10M clips would be 160 MiB).
`sorted_unique` builds the frozen form that read tasks look finished clips up in.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable

import numpy as np

# Keys of a new level are merged into the level below while it is at most this much larger.
_MERGE_RATIO = 2


def hashes(values: Iterable[str]) -> np.ndarray:
    """Stable 64-bit hashes (blake2b); a collision needs ~4e9 values to become likely."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8).digest(), "little") for v in values),
        dtype=np.uint64,
    )


def combine(id_hashes: np.ndarray, uri_hashes: np.ndarray) -> np.ndarray:
    """One 64-bit key per (clip_id, uri) pair."""
    with np.errstate(over="ignore"):
        return id_hashes * np.uint64(0x9E3779B97F4A7C15) + uri_hashes


def clip_keys(ids: Iterable[str], uris: Iterable[str]) -> np.ndarray:
    return combine(hashes(ids), hashes(uris))


def contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Which of `keys` are in `sorted_keys` (sorted, unique)."""
    if len(sorted_keys) == 0 or len(keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    idx = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[idx] == keys


NEW, REPEAT, CONFLICT = 0, 1, 2


def _verdicts(ids: np.ndarray, uris: np.ndarray, found: np.ndarray, known: np.ndarray) -> np.ndarray:
    """NEW / REPEAT / CONFLICT per (id, uri) pair, given which ids were `found` already
    (with the uri they were `known` by); within the batch, an id's first pair decides
    for its later ones."""
    verdict = np.full(len(ids), NEW, dtype=np.int8)
    verdict[found] = np.where(known[found] == uris[found], REPEAT, CONFLICT)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    later = np.zeros(len(ids), dtype=bool)
    later[order[1:]] = sorted_ids[1:] == sorted_ids[:-1]
    if later.any():
        first_of = order[np.searchsorted(sorted_ids, ids, side="left")]
        rep = later & (verdict == NEW)
        verdict[rep] = np.where(uris[first_of[rep]] == uris[rep], REPEAT, CONFLICT)
    return verdict


class KeyMap:
    """id hash -> uri hash of every clip added so far, in memory."""

    def __init__(self) -> None:
        self.levels: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted id hashes, their uri hashes)

    def __len__(self) -> int:
        return sum(len(ids) for ids, _ in self.levels)

    @property
    def nbytes(self) -> int:
        return sum(ids.nbytes + uris.nbytes for ids, uris in self.levels)

    def _lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found = np.zeros(len(ids), dtype=bool)
        uris = np.zeros(len(ids), dtype=np.uint64)
        for level_ids, level_uris in self.levels:
            idx = np.minimum(np.searchsorted(level_ids, ids), len(level_ids) - 1)
            hit = (level_ids[idx] == ids) & ~found
            uris[hit] = level_uris[idx[hit]]
            found |= hit
        return found, uris

    def add(self, ids: np.ndarray, uris: np.ndarray) -> np.ndarray:
        """Add the (id, uri) hash pairs in order; per pair: NEW, REPEAT (the id was seen
        with this uri: a duplicate) or CONFLICT (the id was seen with another uri).
        Only NEW pairs are kept."""
        ids, uris = np.asarray(ids, np.uint64), np.asarray(uris, np.uint64)
        verdict = _verdicts(ids, uris, *self._lookup(ids))
        keep = verdict == NEW
        if keep.any():
            self._insert(ids[keep], uris[keep])
        return verdict

    def _insert(self, ids: np.ndarray, uris: np.ndarray) -> None:
        order = np.argsort(ids, kind="stable")
        level = (ids[order], uris[order])
        while self.levels and len(self.levels[-1][0]) <= _MERGE_RATIO * len(level[0]):
            level = _merge(self.levels.pop(), level)
        self.levels.append(level)


STORE_PREFIX = "emodist-keys-"


def sweep(folder: str, only_dead: bool) -> list[str]:
    """Remove the key stores in `folder` that no live run uses, and say which: every other
    process's (`only_dead=False`: the caller holds the output's lease), or only those of
    processes that no longer run on this host (a shared temporary folder)."""
    removed = []
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return removed
    for name in names:
        if not name.startswith(STORE_PREFIX):
            continue
        pid = name[len(STORE_PREFIX):].split("-", 1)[0]
        if pid == str(os.getpid()) or (only_dead and (not pid.isdigit() or _alive(int(pid)))):
            continue  # this process's own, or a live one's (or one of before pids were in the name)
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
        removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


# Ids looked up per SELECT (SQLite's bound-parameter limit is 32,766 since 3.32).
_LOOKUP_CHUNK = 512


class DiskKeyMap:
    """KeyMap's map in an SQLite file in a private temporary folder, with a page cache of
    `cache_mib`: the process holds a batch's keys, not the run's. A million keys cost
    ~5 s instead of KeyMap's ~1 s and 16 MiB of heap (measured once, standalone, on a
    2-core VM: benchmarks/results/rows-2026-12-03.txt).
    `close` deletes the file (so does garbage collection or the interpreter's exit); a
    killed process leaves its emodist-keys-<pid>-* folder, which `sweep` removes at the
    next run (RunFolder.key_store)."""

    def __init__(self, cache_mib: int = 4, folder: str | None = None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix=f"{STORE_PREFIX}{os.getpid()}-", dir=folder)
        self._db = sqlite3.connect(os.path.join(self._dir.name, "keys.sqlite"), isolation_level=None)
        # A scratch file rebuilt by every run: no journal, no fsync.
        self._db.executescript(
            f"PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-{cache_mib * 1024};"
            "CREATE TABLE seen (id INTEGER PRIMARY KEY, uri INTEGER NOT NULL) WITHOUT ROWID;")
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, ids: np.ndarray, uris: np.ndarray) -> np.ndarray:
        """As KeyMap.add."""
        ids, uris = np.asarray(ids, np.uint64), np.asarray(uris, np.uint64)
        # SQLite integers are signed 64-bit: the same bits, read as int64.
        sids = ids.view(np.int64)
        listed = sids.tolist()
        known: dict[int, int] = {}
        for at in range(0, len(listed), _LOOKUP_CHUNK):
            part = listed[at:at + _LOOKUP_CHUNK]
            known.update(self._db.execute(
                f"SELECT id, uri FROM seen WHERE id IN ({','.join('?' * len(part))})", part).fetchall())
        found = np.fromiter((i in known for i in listed), dtype=bool, count=len(listed))
        known_uris = np.fromiter((known.get(i, 0) for i in listed), dtype=np.int64, count=len(listed))
        verdict = _verdicts(ids, uris, found, known_uris.view(np.uint64))
        keep = np.flatnonzero(verdict == NEW)
        if len(keep):
            keep = keep[np.argsort(ids[keep], kind="stable")]  # in key order: neighbouring pages
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO seen VALUES (?, ?)",
                                 zip(sids[keep].tolist(), uris[keep].view(np.int64).tolist()))
            self._db.execute("COMMIT")
            self._count += len(keep)
        return verdict

    def close(self) -> None:
        self._db.close()
        self._dir.cleanup()


def _merge(below: tuple[np.ndarray, np.ndarray], above: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Two sorted levels as one, in one pass (`below`'s keys first among equals), ids then
    uris, each old array let go once copied: at most 1.5x the keys' bytes beside them
    (sorting the concatenation took ~3x more, the driver's peak at a million clips)."""
    (b_ids, b_uris), (a_ids, a_uris) = below, above
    del below, above
    at = np.searchsorted(b_ids, a_ids, side="right")
    at += np.arange(len(a_ids), dtype=at.dtype)
    rest = np.ones(len(b_ids) + len(a_ids), dtype=bool)
    rest[at] = False
    ids = np.empty(len(rest), np.uint64)
    ids[at], ids[rest] = a_ids, b_ids
    del a_ids, b_ids
    uris = np.empty(len(rest), np.uint64)
    uris[at], uris[rest] = a_uris, b_uris
    return ids, uris


def sorted_unique(keys: Iterable[np.ndarray]) -> np.ndarray:
    """One sorted array of unique keys from chunks of keys."""
    chunks = [np.asarray(k, np.uint64) for k in keys]
    return np.unique(np.concatenate(chunks)) if chunks else np.zeros(0, np.uint64)
