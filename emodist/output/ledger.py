"""The ledger of clips: which clip a row is (its `(clip_id, uri)` as 64-bit keys), whether
it was done before this run, and whether this run met it already. Every place that
meets rows (a read task listing its input, the driver committing them, the check of a
manifest's ids) settles them here, so "done", "duplicate" and "conflict" mean one thing.

The keys of the clips done before the run come from the output's committed parts
(resume.py reads them in a Ray task); they travel to the read tasks as one sorted
array, 8 bytes a clip.
"""
from __future__ import annotations

import numpy as np

from emodist.output import keys

NEW, REPEAT, CONFLICT = keys.NEW, keys.REPEAT, keys.CONFLICT
DONE = 3  # done before this run (resume): skipped, only counted


class Ledger:
    """The clips met so far (`seen`: a KeyMap, or a DiskKeyMap where memory must stay flat)
    and, optionally, those done before the run (`done`: sorted keys)."""

    def __init__(self, done: np.ndarray | None = None, seen=None):
        self.done = done if done is not None and len(done) else None
        self.seen = seen if seen is not None else keys.KeyMap()

    def settle(self, id_hashes: np.ndarray, uri_hashes: np.ndarray) -> np.ndarray:
        """Per (id, uri) pair, in order: NEW (to do), DONE (done before this run), REPEAT (met
        already with this uri: a duplicate) or CONFLICT (the id was met with another uri).
        Repeats first: a repeated line of a finished clip is a duplicate, not a second skip."""
        verdict = self.seen.add(id_hashes, uri_hashes)
        if self.done is not None:
            finished = (verdict == NEW) & keys.contains(self.done, keys.combine(id_hashes, uri_hashes))
            verdict[finished] = DONE
        return verdict

    def close(self) -> None:
        close = getattr(self.seen, "close", None)
        if close is not None:
            close()
