"""Clip keys as 64-bit hashes, and sets of them that stay small: 8 bytes a key in sorted
numpy arrays, never a Python object per clip.

A clip is identified by its `clip_id` and its `uri` together (two folders may both hold
`clip_00000`; one manifest line may repeat). `KeyMap` remembers, for each id seen, the
uri it was seen with, in levels of sorted arrays merged as they grow (a log-structured
merge), so adding n keys costs O(n log n) and memory 16 bytes a key; `sorted_keys` is the
frozen form that read tasks look finished clips up in.
"""
from __future__ import annotations

import hashlib
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


class KeyMap:
    """id hash -> uri hash of every clip added so far."""

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
        verdict = np.full(len(ids), NEW, dtype=np.int8)
        found, known = self._lookup(ids)
        verdict[found] = np.where(known[found] == uris[found], REPEAT, CONFLICT)
        # Within the batch: the first occurrence of an id decides for the later ones.
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        later = np.zeros(len(ids), dtype=bool)
        later[order[1:]] = sorted_ids[1:] == sorted_ids[:-1]
        if later.any():
            first_of = order[np.searchsorted(sorted_ids, ids, side="left")]
            rep = later & (verdict == NEW)
            verdict[rep] = np.where(uris[first_of[rep]] == uris[rep], REPEAT, CONFLICT)
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
