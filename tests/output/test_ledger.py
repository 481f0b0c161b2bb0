"""The ledger settles every row the same way wherever it is met (read tasks, the id
check, the commit): to do, done before this run, a repeat, or an id that names another clip."""
import numpy as np

from emodist.output import keys
from emodist.output.ledger import CONFLICT, DONE, NEW, REPEAT, Ledger


def _settle(ledger, pairs):
    ids, uris = zip(*pairs)
    return ledger.settle(keys.hashes(ids), keys.hashes(uris)).tolist()


def test_done_repeat_and_conflict_are_told_apart_and_a_repeat_of_a_done_clip_is_a_repeat():
    done = keys.sorted_unique([keys.clip_keys(["b"], ["/v/b"])])
    ledger = Ledger(done)
    assert _settle(ledger, [("a", "/v/a"), ("b", "/v/b"), ("a", "/v/a"), ("b", "/v/b"), ("a", "/w/a")]) == [
        NEW, DONE, REPEAT, REPEAT, CONFLICT]
    # later chunks remember the earlier ones; the same id under another uri that was done
    # before is still a conflict of this run (the id already names /v/b here)
    assert _settle(ledger, [("c", "/v/c"), ("b", "/w/b"), ("c", "/v/c")]) == [NEW, CONFLICT, REPEAT]


def test_without_done_keys_nothing_is_done_and_a_disk_map_gives_the_same_verdicts(tmp_path):
    pairs = [(f"k{i % 40}", f"/v/{i % 40 if i % 7 else i}") for i in range(200)]
    memory = _settle(Ledger(), pairs)
    disk = Ledger(seen=keys.DiskKeyMap(folder=str(tmp_path)))
    try:
        assert _settle(disk, pairs) == memory
    finally:
        disk.close()
    assert DONE not in memory and {NEW, REPEAT, CONFLICT} <= set(memory)
    assert Ledger(np.zeros(0, np.uint64)).done is None  # an empty done set costs no lookups
