"""Commit output rows as Parquet parts, each one atomic.

Rows are buffered and written every `part_rows` rows, so a crash loses at most one
part's worth of work; failure rows, which arrive thousands at once from carriers, go out
as one part for all that waits. Locally a part is written under a hidden name and
renamed; on object stores a single PUT is already atomic. Readers (pyarrow, Ray, pandas)
skip hidden and underscore-prefixed files, so a half-written part is never read.
"""
from __future__ import annotations

import contextlib
import errno
import io
import posixpath
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq


class PartWriter:
    def __init__(self, out_uri: str, schema: pa.Schema, part_rows: int, run_id: str | None = None,
                 storage_options: dict | None = None):
        # storage_options: from emodist.storage.storage_options(cfg, out_uri)
        self.fs, self.path = fsspec.core.url_to_fs(out_uri, **(storage_options or {}))
        self.fs.makedirs(self.path, exist_ok=True)
        self.schema = schema
        self.part_rows = part_rows
        self.run_id = run_id or uuid.uuid4().hex[:8]
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.parts = 0
        self.written = 0
        self._local = "file" in self.fs.protocol or "local" in self.fs.protocol

    @classmethod
    def into(cls, folder, sub: str, run_id: str | None = None) -> PartWriter:
        """The writer of `sub` (folder.PREDICTIONS or FAILURES) of a RunFolder, in that
        part's schema and the run's part size."""
        from emodist import schema as col
        from emodist import storage
        from emodist.output.folder import PREDICTIONS

        schema = col.PREDICTIONS if sub == PREDICTIONS else col.FAILURES
        return cls(folder.uri_of(sub), schema, folder.cfg.run.part_rows, run_id=run_id,
                   storage_options=storage.storage_options(folder.cfg, folder.uri))

    def add(self, table: pa.Table, whole: bool = False) -> None:
        """Buffer `table`'s rows; commit a part each time part_rows are waiting. With
        `whole`, everything waiting goes out as one part once part_rows are waiting (a
        table of thousands of rows is one part, not thousands / part_rows; what a crash
        loses is still at most the part_rows - 1 rows waiting before it)."""
        if table.num_rows:
            self.pending.append(table)
            self.pending_rows += table.num_rows
        if whole and self.pending_rows >= self.part_rows:
            self.flush()
            return
        while self.pending_rows >= self.part_rows:
            whole_table = pa.concat_tables(self.pending)
            self._write(whole_table.slice(0, self.part_rows))
            rest = whole_table.slice(self.part_rows)
            self.pending, self.pending_rows = ([rest] if rest.num_rows else []), rest.num_rows

    def flush(self) -> None:
        if self.pending_rows:
            self._write(pa.concat_tables(self.pending))
            self.pending, self.pending_rows = [], 0

    def ensure_one(self) -> None:
        """A schema-only part when the folder holds none, so that readers of
        `folder/*.parquet` (DuckDB, polars, pandas) always find the columns."""
        try:
            names = self.fs.ls(self.path, detail=False)
        except FileNotFoundError:  # an object-store "folder" with nothing in it
            names = []
        if not any(posixpath.basename(p).startswith("part-") for p in names):
            self._write(self.schema.empty_table(), name=f"part-{self.run_id}-empty.parquet")
            self.parts -= 1

    def _write(self, table: pa.Table, name: str | None = None) -> None:
        table = table.cast(self.schema)
        name = name or f"part-{self.run_id}-{self.parts:05d}.parquet"
        final = posixpath.join(self.path, name)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        tmp = posixpath.join(self.path, f".{name}.tmp")
        try:
            if self._local:
                with self.fs.open(tmp, "wb") as f:
                    f.write(buf.getvalue())
                self.fs.mv(tmp, final)
            else:
                self.fs.pipe_file(final, buf.getvalue())
        except OSError as exc:
            if self._local:
                with contextlib.suppress(OSError):
                    self.fs.rm_file(tmp)  # never leave a half-written part behind
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OutputFull(
                    f"no space left writing {final}: free space (or write elsewhere), then run the same "
                    "command again: every committed part is kept and the run resumes") from None
            raise
        self.parts += 1
        self.written += table.num_rows


class OutputFull(OSError):
    """The output's storage is full; what was committed stays, a rerun resumes."""
