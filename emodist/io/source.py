"""An input as the pipeline reads it: `open_source` gives a `ClipSource`, what the driver
decided about it (detect.py), and its rows, read in Ray read tasks, one per listing, manifest or shard,
in parallel across files; or in this process for small inputs and tests (`rows()`).

Every read task yields blocks of one decode batch, so that all decode actors get work
from the start (`ray.data.read_parquet` would give a row group per block: often a whole
manifest, for one actor), and listings and manifests may run LISTING_AHEAD_BLOCKS blocks
ahead of the decode actors (Ray Data's default for a streaming read is 2: the actors
then got one batch per turn of the executor's loop and sat idle half the time,
benchmarks/RESULTS.md). Tar shards carry the clips' bytes and keep Ray's default.
"""
from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa

from emodist import schema as col
from emodist import storage
from emodist.io import detect, manifests, rows, shards, walk
from emodist.output import carry, keys, ledger
from emodist.output.ledger import Ledger
from emodist.storage import SourceError, scrub

# Listing, manifest and shard reading wait on storage, not on the CPU: a small share
# keeps them schedulable next to the stage actors (on 2 CPUs a 1-CPU read task would
# wait forever for a CPU the actors hold).
READ_NUM_CPUS = 0.25
# Blocks (of one decode batch each) a listing or manifest read task may hold ready ahead
# of the decode pool. These rows are a few hundred bytes, so thousands of clips ahead
# cost little; Ray's own file-listing operator turns the limit off altogether.
LISTING_AHEAD_BLOCKS = 1024
# The progress bar's total: local inputs are listed once in the driver when that takes
# less than this (a folder or manifest of tens of thousands of clips).
COUNT_BUDGET_S = 1.0

RowGenerator = Callable[[], Iterator[dict]]


@dataclass
class ClipSource:
    """What the driver learned about an input, cheaply; `dataset()` reads it in Ray."""

    uri: str
    format: str  # listing | manifest | split | webdataset | table
    cfg: Any
    files: list[str] = field(default_factory=list)
    pattern: str | None = None
    table: pa.Table | None = None
    _spans: dict = field(default_factory=dict, repr=False)  # manifest uri -> its byte ranges (manifests.spans)

    def count(self, budget_s: float = COUNT_BUDGET_S) -> int | None:
        """Number of clips (rows the run will give, failures included) when it can be
        known cheaply: a table's rows; local folders and manifests listed in the driver
        within `budget_s`; else None (the progress bar then shows no total). Object
        storage and tar shards are not listed twice."""
        if self.table is not None:
            return self.table.num_rows
        if self.format == "webdataset" or not all(storage.is_local(u) for u in (self.files or [self.uri])):
            return None
        deadline, n = time.monotonic() + budget_s, 0
        for make_rows, _ in self.row_generators():
            for _ in make_rows():
                n += 1
                if n % 512 == 0 and time.monotonic() > deadline:
                    return None
        return n

    def is_empty(self, budget_s: float = COUNT_BUDGET_S) -> bool:
        """True when the input gives no row at all (a manifest with a header and no lines, a
        glob that matches nothing): known by reading until the first row, for at most
        `budget_s` (an object-store listing that takes longer counts as not empty: the run
        then finds out)."""
        if self.table is not None:
            return self.table.num_rows == 0
        if self.format == "listing" and self.pattern is None:
            return False  # a folder: detect looked at its first listing page already
        deadline = time.monotonic() + budget_s
        for make_rows, _ in self.row_generators():
            for _ in make_rows():
                return False
            if time.monotonic() > deadline:
                return False
        return True

    def row_generators(self) -> list[tuple[RowGenerator, str]]:
        """(picklable generator of SOURCE rows, name) per read task."""
        cfg = self.cfg
        if self.table is not None:
            return [(partial(_table_rows, self.table), self.uri)]
        if self.format == "listing":
            return [(partial(walk.listing_rows, self.uri, cfg, self.pattern, cfg.input.format), self.uri)]
        if self.format == "webdataset":
            return [(partial(shards.shard_rows, u, cfg), u) for u in self.files]
        out = []
        for u in self.files:
            fs, path = storage.filesystem(u, cfg)
            kind = "split" if self.format == "split" else manifests.manifest_kind(fs, path)
            if u not in self._spans:  # one scan of the file, however often this is asked
                self._spans[u] = manifests.spans(fs, path, kind)
            # A large manifest: one read task per range of it, so listing (and a resume's
            # skipping) scales with the cluster's CPUs instead of one task's line rate. A
            # line repeated in another range is found by the driver's commit instead (still
            # one row; a resume counts it as skipped, not as a duplicate).
            out.extend((partial(manifests.manifest_rows, u, cfg, kind, span), u) for span in self._spans[u])
        return out

    def rows(self) -> Iterator[dict]:
        """All SOURCE rows, in this process (small inputs; tests)."""
        if self.table is not None:
            yield from self.table.to_pylist()
            return
        for make_rows, _ in self.row_generators():
            yield from make_rows()

    def check_ids(self) -> None:
        """Refuse, before any clip is decoded, a manifest whose clip_id column gives one id
        to two different clips (one Ray task reads the ids; SourceError names the lines)."""
        if self.format != "manifest":
            return
        with_ids = [(fn, name) for fn, name in self.row_generators()
                    if manifests.has_id_column(*storage.filesystem(name, self.cfg))]
        if not with_ids:  # ids come from the paths: unique by construction
            return
        import ray

        task = ray.remote(num_cpus=READ_NUM_CPUS)(id_conflicts)
        found = ray.get(task.remote(with_ids))
        if found:
            raise SourceError(f"{self.uri}: clip ids must name one clip each: " + "; ".join(found)
                              + f"; {rows.ONE_ID_EACH}")

    def dataset(self, done_ref=None):
        """The Ray dataset of SOURCE rows; listing, parsing and shard reading run in Ray
        read tasks (`READ_NUM_CPUS` each), in parallel across files. `done_ref`: an object
        ref of the sorted keys of clips already finished, skipped in the read tasks."""
        return dataset_of(self.row_generators(), self.cfg, done_ref, check_local=self.format in ("manifest", "split"),
                          ahead=self.format != "webdataset")


def open_source(input_uri: str, cfg=None) -> ClipSource:
    """The input at `input_uri`, checked readable, its format decided (detect.py) and
    refused when it holds no clip; cheap: no listing beyond one page. Raises SourceError /
    StorageError."""
    if cfg is None:
        from emodist.config import Config

        cfg = Config()
    storage.refuse_userinfo(input_uri, "input")
    try:
        d = detect.plan(input_uri, cfg)
        source = ClipSource(d.uri, d.format, cfg, files=d.files, pattern=d.pattern, table=d.table)
        if source.is_empty():
            raise SourceError(detect.no_clips(input_uri, source))
        return source
    except SourceError:
        raise
    except (ImportError, ValueError) as exc:
        raise SourceError(f"{input_uri}: cannot open: {scrub(str(exc))}") from None
    except Exception as exc:  # noqa: BLE001 - storage errors get a clear message
        raise storage.explain(exc, input_uri, "reading") from None


def list_clips(input_uri: str, cfg=None) -> pa.Table:
    """The clips of any supported input as (clip_id, uri, ref_label), in this process
    (small inputs). A row that fails to list raises SourceError; the pipeline instead
    streams the input through Ray (`open_source(...).dataset()`) and keeps going."""
    source = open_source(input_uri, cfg)
    out = []
    for r in source.rows():
        if r["error_stage"]:
            raise SourceError(r["error_message"].removeprefix(f"{rows.LIST_STAGE}: "))
        out.append({k: r[k] for k in rows.CLIPS.names})
    if not out:
        raise SourceError(f"{input_uri}: no clips found")
    return pa.Table.from_pylist(out, schema=rows.CLIPS)


def read_manifest(uri: str, cfg=None) -> tuple[pa.Table, list[dict]]:
    """A manifest or split file in this process, read as `run` reads it: (clip_id, uri,
    ref_label) of the rows that parse, and the failure rows of those that do not."""
    source = open_source(uri, cfg)
    if source.format not in ("manifest", "split"):
        raise SourceError(f"{uri}: not a manifest or split file ({source.format}); pass a .csv, "
                          ".parquet, .jsonl manifest or a .txt split file")
    good, bad = [], []
    for r in source.rows():
        (bad if r[col.ERROR_STAGE] else good).append(r)
    return pa.Table.from_pylist([{k: r[k] for k in rows.CLIPS.names} for r in good], schema=rows.CLIPS), bad


def id_conflicts(generators: list[tuple[RowGenerator, str]], limit: int = 5) -> list[str]:
    """Ids that name two different uris across the files, with both lines (at most `limit`)."""
    found = _IdConflicts(limit)
    for make_rows, name in generators:
        where = rows.name_of(name)
        chunk: list[dict] = []
        for r in make_rows():
            chunk.append(r)
            if len(chunk) >= _CHUNK:
                found.check(chunk, where)
                chunk = []
        found.check(chunk, where)
        if len(found.out) >= limit:
            break
    return found.out


class _IdConflicts:
    """The ids met so far across a manifest's files (the ledger), where each was first
    met, and the conflicts found."""

    def __init__(self, limit: int):
        self.ledger, self.limit = Ledger(), limit
        self.first: dict[int, str] = {}
        self.out: list[str] = []

    def check(self, chunk: list[dict], where: str) -> None:
        good = [r for r in chunk if not r[col.ERROR_STAGE]]
        if not good:
            return
        id_h = keys.hashes(r[col.CLIP_ID] for r in good)
        uris = list(storage.scrub_all(r[col.URI] for r in good))  # keyed and named: scrubbed once
        verdict = self.ledger.settle(id_h, keys.hashes(uris))
        for k, r in enumerate(good):
            here = f"{where} line {r.get('_line') or '?'} ({uris[k]})"
            if verdict[k] == ledger.NEW:
                if len(self.first) < 1_000_000:  # where an id was first seen, for the message
                    self.first[int(id_h[k])] = here
            elif verdict[k] == ledger.CONFLICT and len(self.out) < self.limit:
                self.out.append(f"{r[col.CLIP_ID]!r} is on {self.first.get(int(id_h[k]), '?')} and on {here}")


def dataset_of(generators: list[tuple[RowGenerator, str]], cfg, done_ref=None, check_local: bool = False,
               ahead: bool = True):
    """The Ray dataset of SOURCE rows from (row generator, name) pairs, one read task each,
    in blocks of one decode batch (read_blocks)."""
    block_rows = max(1, cfg.decode.batch_size)
    # The ref travels wrapped in a list so that Ray hands the task the ref, not a copy.
    ref = [done_ref] if done_ref is not None else None
    tasks = [(partial(_run_rows, fn, block_rows, ref, check_local), name) for fn, name in generators]
    return _read(_datasource(tasks), ahead=ahead)


def _table_rows(table: pa.Table) -> Iterator[dict]:
    yield from table.to_pylist()


def _run_rows(make_rows: RowGenerator, block_rows: int, done_ref=None, check_local: bool = False) -> Iterator[pa.Table]:
    done = None
    if done_ref is not None:
        import ray

        done = ray.get(done_ref[0])
    yield from read_blocks(make_rows(), block_rows, done, check_local)


# Rows are keyed and looked up this many at a time (vectorised).
_CHUNK = 256
# A carrier goes out with the next block, or alone once this many clips were skipped.
_SKIPPED_REPORT = 100_000


def read_blocks(rows_iter: Iterator[dict], block_rows: int, done=None, check_local: bool = False) -> Iterator[pa.Table]:
    """SOURCE blocks of at most `block_rows` clips to decode, from a read task's rows:
    - clips already finished (`done`: sorted keys of (clip_id, uri)) are skipped here and
      only counted, so a resume does nothing for them but read their ids;
    - a row repeating an earlier (clip_id, uri) is dropped and counted (a duplicate); a
      clip_id repeated with another uri fails, naming both lines;
    - with `check_local`, a local file the manifest names but that does not exist fails
      here (one stat), not after a trip through the decode pool;
    - failed rows travel packed into carrier rows (output/carry.py): blocks are sized by the
      clips they carry to the decoders, not by the rows that only need writing.
    Which clip is done, repeated or in conflict the ledger says (output/ledger.py)."""
    task = _ReadTask(Ledger(done), check_local)
    chunk: list[dict] = []
    nbytes = 0
    for r in rows_iter:
        chunk.append(r)
        nbytes += len(r.get(rows.DATA) or b"")
        if len(chunk) >= _CHUNK or nbytes >= rows.BLOCK_BYTES:
            task.take(chunk)
            chunk, nbytes = [], 0
        yield from task.ready(block_rows)
    task.take(chunk)
    yield from task.rest(block_rows)


class _ReadTask:
    """What one read task holds between blocks: the ledger of its rows, the clips to
    decode, the failed rows and the counts not yet sent. Its state is its own: taking rows
    in and giving blocks out are two methods of it, not closures over shared variables."""

    def __init__(self, ledger: Ledger, check_local: bool):
        self.ledger, self.check_local = ledger, check_local
        self.lines: dict[int, tuple[int | None, str]] = {}  # first line and uri per id hash (manifests)
        self.work: list[dict] = []
        self.failed: list[dict] = []
        self.skipped = self.duplicates = 0
        self.emitted = False

    def take(self, chunk: list[dict]) -> None:
        """Settle a chunk of rows: the failed ones wait to be carried, the clips to do wait
        for a block."""
        good = [r for r in chunk if not r[col.ERROR_STAGE]]
        self.failed.extend(r for r in chunk if r[col.ERROR_STAGE])
        if not good:
            return
        id_h = keys.hashes(r[col.CLIP_ID] for r in good)
        uris = list(storage.scrub_all(r[col.URI] for r in good))  # keyed and named: scrubbed once
        verdict = self.ledger.settle(id_h, keys.hashes(uris))
        self.skipped += int((verdict == ledger.DONE).sum())
        self.duplicates += int((verdict == ledger.REPEAT).sum())
        for k in np.flatnonzero((verdict == ledger.NEW) | (verdict == ledger.CONFLICT)):
            r = good[k]
            line = r.get("_line")
            if verdict[k] == ledger.CONFLICT:
                self.failed.append(self._conflict(r, line, int(id_h[k])))
                continue
            if len(self.lines) < 1_000_000:  # where an id was first seen, for the message; bounded
                self.lines.setdefault(int(id_h[k]), (line, uris[k]))
            if self.check_local and storage.is_local(r[col.URI]) and not _exists_locally(r[col.URI]):
                self.failed.append(_missing(r, line))
                continue
            self.work.append(r)

    def _conflict(self, r: dict, line: int | None, id_hash: int) -> dict:
        first_line, first_uri = self.lines.get(id_hash, (None, "?"))
        where = f"line {line}: " if line else ""
        return rows.fail(r[col.CLIP_ID], r[col.URI], (
            f"{where}clip_id {r[col.CLIP_ID]!r} already names another clip"
            f"{f' (line {first_line}: {first_uri})' if first_line else f' ({first_uri})'}; "
            f"{rows.ONE_ID_EACH}"))

    def ready(self, block_rows: int) -> Iterator[pa.Table]:
        """The blocks due now: each full block of clips; the carried rows alone once enough
        wait; what waits when its bytes (tar members) fill a block."""
        while len(self.work) >= block_rows:
            yield self._block(block_rows)
        if (len(self.failed) >= rows.CARRY_ROWS or self.skipped >= _SKIPPED_REPORT) and not self.work:
            yield self._block(0)
        if sum(len(w.get(rows.DATA) or b"") for w in self.work) >= rows.BLOCK_BYTES:
            yield self._block(len(self.work))

    def rest(self, block_rows: int) -> Iterator[pa.Table]:
        """The last blocks: every clip left, then whatever is still to carry (at least one
        block per task, so that an empty task still reports)."""
        while self.work:
            yield self._block(block_rows)
        if self.failed or self.skipped or self.duplicates or not self.emitted:
            yield self._block(0)

    def _block(self, n: int) -> pa.Table:
        """A block of the first `n` clips waiting, with a carrier of what waits to be
        carried (failed rows, counts) when there is any."""
        out, self.work = self.work[:n], self.work[n:]
        if self.failed or self.skipped or self.duplicates:
            out.append(carry.carrier(self.failed, self.skipped, self.duplicates, template=rows.ok("", "")))
            self.failed, self.skipped, self.duplicates = [], 0, 0
        self.emitted = True
        return rows.table(out)


def _missing(r: dict, line: int | None) -> dict:
    """The failure row of a local file a manifest names that is not there."""
    return rows.fail(r[col.CLIP_ID], r[col.URI], f"{f'line {line}: ' if line else ''}" + (
        "a symbolic link that loops or leads nowhere; point it at the video file, or remove the line"
        if os.path.islink(r[col.URI].removeprefix("file://")) else
        "not found: the manifest names this file but it does not exist; check the path (relative "
        "paths resolve against the manifest's folder, or input.root), or restore the clip"))


def _exists_locally(uri: str) -> bool:
    """A local file, or the tar shard of a 'shard.tar#member' uri, exists."""
    path = uri.removeprefix("file://")
    return os.path.exists(path) or ("#" in path and os.path.isfile(path.rsplit("#", 1)[0]))


def _datasource(tasks: list[tuple[Callable[[], Iterator[pa.Table]], str]]):
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    class ClipsDatasource(Datasource):
        """One Ray read task per (row generator, name): a listing, a manifest, a shard."""

        def estimate_inmemory_data_size(self):
            return None

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None, **_):
            return [
                ReadTask(fn,
                         BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=[name]),
                         schema=rows.SOURCE)
                for fn, name in tasks
            ]

        def get_name(self) -> str:
            return "ListClips"

    return ClipsDatasource()


def _read(datasource, ahead: bool):
    """ray.data.read_datasource; with `ahead`, each read task may run LISTING_AHEAD_BLOCKS
    blocks ahead of its consumer."""
    import ray

    if not ahead:
        return ray.data.read_datasource(datasource, num_cpus=READ_NUM_CPUS)
    with warnings.catch_warnings():
        # Deprecated since Ray 2.60 (removal planned for 2.64), but no named parameter
        # sets a read task's generator backpressure yet. tests/io/test_source.py checks
        # that the read operator still carries it after a Ray upgrade.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        return ray.data.read_datasource(
            datasource, num_cpus=READ_NUM_CPUS,
            # two objects per block: the block and its metadata
            ray_remote_args={"_generator_backpressure_num_objects": 2 * LISTING_AHEAD_BLOCKS})
