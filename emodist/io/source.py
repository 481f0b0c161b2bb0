"""An input as the pipeline reads it: `ClipSource`, what the driver decided about it
(detect.py), and its rows, read in Ray read tasks, one per listing, manifest or shard,
in parallel across files; or in this process for small inputs and tests (`rows()`).

Every read task yields blocks of one decode batch, so that all decode actors get work
from the start (`ray.data.read_parquet` would give a row group per block: often a whole
manifest, for one actor), and listings and manifests may run LISTING_AHEAD_BLOCKS blocks
ahead of the decode actors (Ray Data's default for a streaming read is 2: the actors
then got one batch per turn of the executor's loop and sat idle half the time,
benchmarks/RESULTS.md). Tar shards carry the clips' bytes and keep Ray's default.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pyarrow as pa

from emodist import storage
from emodist.io import manifests, rows, shards, walk

# Listing, manifest and shard reading wait on storage, not on the CPU: a small share
# keeps them schedulable next to the stage actors (on 2 CPUs a 1-CPU read task would
# wait forever for a CPU the actors hold).
READ_NUM_CPUS = 0.25
# Blocks (of one decode batch each) a listing or manifest read task may hold ready ahead
# of the decode pool. These rows are a few hundred bytes, so thousands of clips ahead
# cost little; Ray's own file-listing operator turns the limit off altogether.
LISTING_AHEAD_BLOCKS = 1024

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

    @property
    def count(self) -> int | None:
        """Number of clips when known before reading (small inputs), else None."""
        return self.table.num_rows if self.table is not None else None

    def row_generators(self) -> list[tuple[RowGenerator, str]]:
        """(picklable generator of SOURCE rows, name) per read task."""
        cfg = self.cfg
        if self.format == "listing":
            return [(partial(walk.listing_rows, self.uri, cfg, self.pattern, cfg.input.format), self.uri)]
        if self.format == "webdataset":
            return [(partial(shards.shard_rows, u, cfg), u) for u in self.files]
        out = []
        for u in self.files:
            fs, path = storage.filesystem(u, cfg)
            kind = "split" if self.format == "split" else manifests.manifest_kind(fs, path)
            out.append((partial(manifests.manifest_rows, u, cfg, kind), u))
        return out

    def rows(self) -> Iterator[dict]:
        """All SOURCE rows, in this process (small inputs; tests)."""
        if self.table is not None:
            yield from self.table.to_pylist()
            return
        for make_rows, _ in self.row_generators():
            yield from make_rows()

    def dataset(self):
        """The Ray dataset of SOURCE rows; listing, parsing and shard reading run in Ray
        read tasks (`READ_NUM_CPUS` each), in parallel across files."""
        import ray

        block_rows = max(1, self.cfg.decode.batch_size)
        if self.table is not None:
            t = self.table
            return ray.data.from_arrow([t.slice(s, block_rows) for s in range(0, max(t.num_rows, 1), block_rows)])
        return _read(_datasource(self.row_generators(), block_rows), ahead=self.format != "webdataset")


def _run_rows(make_rows: RowGenerator, block_rows: int) -> Iterator[pa.Table]:
    yield from rows.blocks(make_rows(), block_rows)


def _datasource(tasks: list[tuple[RowGenerator, str]], block_rows: int):
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    class ClipsDatasource(Datasource):
        """One Ray read task per (row generator, name): a listing, a manifest, a shard."""

        def estimate_inmemory_data_size(self):
            return None

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None, **_):
            return [
                ReadTask(partial(_run_rows, fn, block_rows),
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
