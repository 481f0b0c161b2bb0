"""Clip keys and the sets that hold them in sorted arrays or on disk, not Python objects."""
import os

import numpy as np
import pytest

from emodist.output import keys


@pytest.mark.parametrize("kind", [keys.KeyMap, keys.DiskKeyMap])
def test_the_map_tells_new_repeated_and_conflicting_keys_apart(kind):
    m = kind()
    ids, uris = keys.hashes(["a", "b", "a", "c"]), keys.hashes(["/x/a", "/x/b", "/x/a", "/x/c"])
    assert m.add(ids, uris).tolist() == [keys.NEW, keys.NEW, keys.REPEAT, keys.NEW]
    ids2, uris2 = keys.hashes(["b", "d", "a", "d"]), keys.hashes(["/x/b", "/x/d", "/y/a", "/z/d"])
    assert m.add(ids2, uris2).tolist() == [keys.REPEAT, keys.NEW, keys.CONFLICT, keys.CONFLICT]
    assert len(m) == 4


def test_many_adds_merge_into_few_levels_and_stay_exact():
    rng = np.random.default_rng(0)
    m = keys.KeyMap()
    seen: dict[int, int] = {}
    for _ in range(200):
        ids = rng.integers(0, 5000, 64).astype(np.uint64)
        uris = (ids % 7).astype(np.uint64) + rng.integers(0, 2, 64).astype(np.uint64) * 100
        got = m.add(ids, uris)
        want = []
        for i, u in zip(ids.tolist(), uris.tolist()):
            want.append(keys.NEW if i not in seen else keys.REPEAT if seen[i] == u else keys.CONFLICT)
            seen.setdefault(i, u)
        assert got.tolist() == want
    assert len(m) == len(seen) and len(m.levels) <= 12
    assert m.nbytes == 16 * len(seen)  # 16 bytes a clip, whatever the count


def test_contains_looks_keys_up_in_a_sorted_array():
    done = keys.sorted_unique([keys.clip_keys(["a", "b"], ["/1", "/2"]), keys.clip_keys(["a"], ["/1"])])
    assert len(done) == 2
    probe = keys.clip_keys(["a", "a", "b", "c"], ["/1", "/9", "/2", "/3"])
    assert keys.contains(done, probe).tolist() == [True, False, True, False]
    assert keys.contains(np.zeros(0, np.uint64), probe).tolist() == [False] * 4


def test_the_disk_map_gives_the_memory_maps_verdicts_and_deletes_its_file(tmp_path):
    rng = np.random.default_rng(1)
    memory, disk = keys.KeyMap(), keys.DiskKeyMap(cache_mib=1, folder=str(tmp_path))
    for size in (1, 700, 64, 2000, 5):  # lookups over several SELECT chunks, and the full 64-bit range
        ids = np.concatenate([rng.integers(0, 3000, size).astype(np.uint64),
                              rng.integers(2**63, 2**64 - 1, size, dtype=np.uint64)])
        uris = ids % np.uint64(5) + rng.integers(0, 2, len(ids)).astype(np.uint64)
        want = memory.add(ids, uris)
        assert disk.add(ids, uris).tolist() == want.tolist()
        assert {keys.REPEAT, keys.CONFLICT} & set(want.tolist()) or size < 64
    assert len(disk) == len(memory)
    [folder] = os.listdir(tmp_path)
    assert os.listdir(tmp_path / folder) == ["keys.sqlite"]
    disk.close()
    assert os.listdir(tmp_path) == []


def test_a_killed_processs_store_is_swept_and_a_live_ones_is_kept(tmp_path):
    """A SIGKILL skips every cleanup: the store stays until `sweep` (RunFolder.key_store,
    at the next run) removes it; a live process's store is left alone."""
    import signal
    import subprocess
    import sys

    code = ("import os, signal, sys, numpy as np\nfrom emodist.output import keys\n"
            "m = keys.DiskKeyMap(folder=sys.argv[1]); m.add(np.arange(5, dtype=np.uint64), np.arange(5, dtype=np.uint64))\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    [dead] = os.listdir(tmp_path)
    assert dead.startswith(f"{keys.STORE_PREFIX}") and os.listdir(tmp_path / dead) == ["keys.sqlite"]
    mine = keys.DiskKeyMap(folder=str(tmp_path))
    try:
        assert keys.sweep(str(tmp_path), only_dead=True) == [dead]
        assert os.listdir(tmp_path) == [os.path.basename(mine._dir.name)]
        assert keys.sweep(str(tmp_path), only_dead=False) == []  # this process's own store stays
    finally:
        mine.close()
    assert os.listdir(tmp_path) == []


def test_under_the_lease_every_other_store_is_stale(tmp_path):
    """In OUT/_emodist/keys/ the run holds the output's lease: a store of any other process
    (even one still running elsewhere, which lost the lease) is a dead run's."""
    (tmp_path / f"{keys.STORE_PREFIX}1-abc").mkdir()
    (tmp_path / f"{keys.STORE_PREFIX}{os.getppid()}-abc").mkdir()  # a live process's
    (tmp_path / "other").mkdir()
    assert sorted(keys.sweep(str(tmp_path), only_dead=False)) == sorted(
        [f"{keys.STORE_PREFIX}1-abc", f"{keys.STORE_PREFIX}{os.getppid()}-abc"])
    assert os.listdir(tmp_path) == ["other"]
