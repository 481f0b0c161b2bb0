"""A run's output folder on any filesystem (local, s3:// ...): its layout, its parts, and
its rows read by config.

The layout is spelled out here only. A folder may hold the rows of several configs
(`run --new-config` writes beside the old rows, told apart by `config_hash`); a reader
asks for one, and a folder with two and no choice is refused in one line that names
both hashes, their row counts and the option that chooses (`choose_config`): a score
of an arbitrary mix of two configs would look like a result.
"""
from __future__ import annotations

import json
import os
import posixpath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from emodist import schema as col
from emodist import storage

PREDICTIONS = "predictions"
FAILURES = "failures"
SUMMARY = "summary.json"
STATE = "_emodist"  # the run's own state; readers skip _-prefixed names
CONFIGS = f"{STATE}/configs"
LEASE = f"{STATE}/lease.json"
LOGS = f"{STATE}/logs"
KEYS = f"{STATE}/keys"
DAMAGED = f"{STATE}/damaged"
RETRIED = f"{FAILURES}/_retried"  # failure parts set aside by --retry-failures
OUTPUT_PARTS = (PREDICTIONS, FAILURES)


class ConfigChoice(ValueError):
    """Rows of several configs and none chosen, or a chosen config with no rows."""


def part_files(fs, folder: str) -> list[str]:
    """Committed part files in `folder` (fsspec paths; hidden and _-prefixed names are
    parts still being written, or set aside)."""
    if not fs.exists(folder):
        return []
    return sorted(p for p in fs.ls(folder, detail=False)
                  if posixpath.basename(p).startswith("part-") and p.endswith(".parquet"))


def choose_config(uri: str, counts: dict[str, int], config_hash: str | None,
                  option: str = "--config-hash") -> str | None:
    """The config whose rows a reader takes: `config_hash` when it has rows, the only one
    there is, or None for rows without a config_hash; ConfigChoice otherwise."""
    if config_hash is not None:
        if config_hash not in counts:
            held = ", ".join(f"{h} ({n} rows)" for h, n in counts.items()) or "no config_hash column"
            raise ConfigChoice(f"{uri}: no rows with config_hash {config_hash!r}; it holds {held}")
        return config_hash
    if len(counts) > 1:
        listed = ", ".join(f"{h} ({n} rows)" for h, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        raise ConfigChoice(f"{uri}: rows of {len(counts)} configs side by side (run --new-config): {listed}; "
                           f"pick one with {option} HASH")
    return next(iter(counts), None)


def hash_counts(table: pa.Table | pa.RecordBatch, into: dict[str, int] | None = None) -> dict[str, int]:
    """{config_hash: rows} of `table` (added to `into`); {} without the column."""
    out = {} if into is None else into
    if col.CONFIG_HASH in table.column_names and table.num_rows:
        vc = pc.value_counts(table.column(col.CONFIG_HASH).cast(pa.string()))
        for v, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()):
            if v is not None:  # rows written without a hash (hand-made files) are no config
                out[str(v)] = out.get(str(v), 0) + n
    return out


def log_path(output_uri: str, run_id: str) -> str:
    """Where a run's failure log goes: OUT/_emodist/logs/ for a local output, else the
    temporary folder (a stack is written with plain open())."""
    if storage.is_local(output_uri):
        return posixpath.join(output_uri.removeprefix("file://"), LOGS, f"run-{run_id}.log")
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"emodist-run-{run_id}.log")


class RunFolder:
    """One output folder: where its parts are, its rows by config, its summary, config
    records, logs and key store (the lease, lease.py, lives at LEASE). Cheap to make:
    nothing is read until asked."""

    def __init__(self, uri: str, cfg):
        self.uri, self.cfg = uri.rstrip("/"), cfg
        self.fs, self.root = storage.filesystem(self.uri, cfg)
        self.root = self.root.rstrip("/") or "/"
        self.proto = storage.protocol_prefix(self.uri)
        self.local = storage.is_local(self.uri)

    def uri_of(self, *names: str) -> str:
        return posixpath.join(self.uri, *names)

    def path_of(self, *names: str) -> str:
        return posixpath.join(self.root, *names)

    def is_run(self) -> bool:
        """A run's folder (it has predictions/), not a bare folder of parquet files."""
        return self.fs.isdir(self.path_of(PREDICTIONS))

    # --- parts ----------------------------------------------------------------------------

    def parts(self, sub: str = PREDICTIONS) -> list[str]:
        """The committed parts under `sub` (PREDICTIONS, FAILURES, RETRIED), as full uris."""
        return [self.proto + p for p in part_files(self.fs, self.path_of(sub))]

    def committed_parts(self) -> list[str]:
        """Every committed part of predictions/ and failures/ (what a resume reads)."""
        return [u for sub in OUTPUT_PARTS for u in self.parts(sub)]

    def prediction_parts(self) -> list[str]:
        """predictions/'s parts; for a bare folder of parquet files (a copy of predictions/),
        its own .parquet files."""
        if self.is_run():
            return self.parts(PREDICTIONS)
        return [self.proto + p for p in sorted(self.fs.glob(self.path_of("*.parquet")))
                if posixpath.basename(p)[0] not in "._"]

    def set_aside(self, uri: str) -> None:
        """Move a failure part under failures/_retried/ (readers and resume skip it)."""
        _, path = storage.filesystem(uri, self.cfg)
        self.fs.makedirs(self.path_of(RETRIED), exist_ok=True)
        self.fs.mv(path, self.path_of(RETRIED, posixpath.basename(path)))

    def read_part(self, uri: str, columns: list[str] | None = None) -> pa.Table:
        fs, path = storage.filesystem(uri, self.cfg)
        with fs.open(path, "rb") as f:
            return pq.read_table(f, columns=columns)

    # --- rows, by config ------------------------------------------------------------------

    def config_rows(self, sub: str = PREDICTIONS) -> dict[str, int]:
        """{config_hash: rows} under `sub`, from that column alone."""
        counts: dict[str, int] = {}
        for u in (self.prediction_parts() if sub == PREDICTIONS else self.parts(sub)):
            fs, path = storage.filesystem(u, self.cfg)
            with fs.open(path, "rb") as f:
                pf = pq.ParquetFile(f)
                if col.CONFIG_HASH in pf.schema_arrow.names:
                    hash_counts(pf.read(columns=[col.CONFIG_HASH]), counts)
        return counts

    def read(self, sub: str = PREDICTIONS, columns: list[str] | None = None, config_hash: str | None = None,
             option: str = "--config-hash", missing_ok: bool = False) -> tuple[pa.Table, str | None]:
        """(rows of one config under `sub`, that config's hash); rows of two configs and no
        `config_hash` are refused (ConfigChoice), never mixed; so is a `config_hash` without
        rows, unless `missing_ok` (failures/ of a config that had none: no rows)."""
        files = self.prediction_parts() if sub == PREDICTIONS else self.parts(sub)
        if not files:
            return pa.table({}), None
        want = None if columns is None else list(dict.fromkeys([*columns, col.CONFIG_HASH]))
        tables = []
        for u in files:
            fs, path = storage.filesystem(u, self.cfg)
            with fs.open(path, "rb") as f:
                pf = pq.ParquetFile(f)
                have = pf.schema_arrow.names
                tables.append(pf.read(columns=None if want is None else [c for c in want if c in have]))
        table = pa.concat_tables(tables, promote_options="permissive")
        counts = hash_counts(table)
        if missing_ok and config_hash is not None and config_hash not in counts:
            counts[config_hash] = 0
        chosen = choose_config(self.uri, counts, config_hash, option)
        if chosen is not None:
            table = table.filter(pc.equal(table.column(col.CONFIG_HASH), chosen))
        if columns is not None and col.CONFIG_HASH not in columns and col.CONFIG_HASH in table.column_names:
            table = table.drop_columns([col.CONFIG_HASH])
        return table, chosen

    def failed_ids(self, config_hash: str | None) -> list[str]:
        """The clip ids of failures/ (of `config_hash`'s rows when given)."""
        ids: list[str] = []
        for u in self.parts(FAILURES):
            t = self.read_part(u)
            if config_hash is not None and col.CONFIG_HASH in t.column_names:
                t = t.filter(pc.equal(t.column(col.CONFIG_HASH), config_hash))
            ids += [str(x) for x in t.column(col.CLIP_ID).to_pylist()]
        return ids

    # --- the run's records ----------------------------------------------------------------

    def write_summary(self, summary: dict) -> None:
        self.fs.makedirs(self.root, exist_ok=True)
        self.fs.pipe_file(self.path_of(SUMMARY), json.dumps(summary, indent=2).encode())

    def read_summary(self) -> dict | None:
        try:
            return json.loads(self.fs.cat_file(self.path_of(SUMMARY)))
        except FileNotFoundError:
            return None

    def record_config(self, digest: str, settings: dict) -> None:
        """`_emodist/configs/<hash>.json`: a config's label settings, for later comparisons."""
        path = self.path_of(CONFIGS, f"{digest}.json")
        if not self.fs.exists(path):
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
            self.fs.pipe_file(path, json.dumps(settings, indent=1, sort_keys=True).encode())

    def config_record(self, digest: str) -> dict | None:
        try:
            return json.loads(self.fs.cat_file(self.path_of(CONFIGS, f"{digest}.json")))
        except FileNotFoundError:
            return None

    def log_path(self, run_id: str) -> str:
        return log_path(self.uri, run_id)

    def key_store(self) -> str:
        """The local folder of this run's key store (keys.DiskKeyMap), its stale stores
        removed: OUT/_emodist/keys/ for a local output (the run holds the lease: any other
        store there is a dead run's), else the temporary folder (stores of processes that
        no longer run on this host). Either way a killed run's store is gone at the next run."""
        from emodist.output import keys

        if self.local:
            folder = self.path_of(KEYS)
            os.makedirs(folder, exist_ok=True)
            keys.sweep(folder, only_dead=False)
            return folder
        import tempfile

        folder = tempfile.gettempdir()
        keys.sweep(folder, only_dead=True)
        return folder
