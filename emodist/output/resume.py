"""What an output folder already holds, and what a run must still do.

A clip is done when a committed part (predictions/ or failures/) holds a row with its
`(clip_id, uri)` under this run's config hash. Resume reads only those columns, in a Ray
task: the driver never holds the finished set, which travels as sorted 64-bit keys
(8 bytes a clip) to the read tasks that skip finished clips (io/source.py).

A rerun under a config that labels differently (another hash) is refused, naming both
hashes and the keys that changed, unless asked for (`new_config`): the new rows are then
written beside the old ones, told apart by `config_hash`. Every run records its label
settings as `_emodist/configs/<hash>.json`, so a later run can say what changed.

`--retry-failures` sets the failure parts aside (under failures/_retried/, which readers
skip) and runs exactly those clips again, counting attempts; listing failures (a line of
a manifest that did not parse) are retried by reading that manifest again.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from emodist import schema as col
from emodist import storage
from emodist.config import ConfigError
from emodist.output import carry, keys
from emodist.output.folder import DAMAGED, FAILURES, PREDICTIONS, RETRIED, RunFolder
from emodist.storage import filesystem


def committed_parts(output_uri: str, cfg) -> list[str]:
    """The committed parts under predictions/ and failures/, as full uris."""
    return RunFolder(output_uri, cfg).committed_parts()


class DamagedPart(storage.SourceError):
    """A committed part that does not read as Parquet (truncated, overwritten): the run
    cannot know its clips, so it does not start; the message names the part and the fix."""


def damaged(uri: str, exc: BaseException) -> DamagedPart:
    detail = " ".join(str(exc).split())[:200]
    return DamagedPart(f"{uri}: this part of the output is damaged (not readable as Parquet: {detail}); move it "
                       f"out of {PREDICTIONS}/ and {FAILURES}/ (e.g. into the output's {DAMAGED}/) and rerun the "
                       "same command: its clips are labeled again")


def _read_columns(uri: str, cfg, columns: list[str]):
    fs, path = filesystem(uri, cfg)
    try:
        with fs.open(path, "rb") as f:
            return pq.read_table(f, columns=columns)
    except pa.ArrowInvalid as exc:  # a parse error, not a storage one (those stay OSErrors)
        raise damaged(uri, exc) from None


def scan(parts: list[str], cfg, digest: str) -> tuple[dict[str, int], np.ndarray]:
    """({config hash: rows}, sorted keys of the clips done under `digest`), part by part."""
    hashes: dict[str, int] = {}
    done = []
    for uri in parts:
        t = _read_columns(uri, cfg, [col.CLIP_ID, col.URI, col.CONFIG_HASH])
        h = t.column(col.CONFIG_HASH).to_pylist()
        for v in set(h):
            hashes[v] = hashes.get(v, 0) + h.count(v)
        mine = [i for i, v in enumerate(h) if v == digest]
        if mine:
            ids, uris = t.column(col.CLIP_ID).to_pylist(), t.column(col.URI).to_pylist()
            done.append(keys.clip_keys((ids[i] for i in mine), (uris[i] for i in mine)))
    return hashes, keys.sorted_unique(done)


def _scan_task(parts: list[str], cfg, digest: str):
    return scan(parts, cfg, digest)


@dataclass
class State:
    """An output as a run finds it."""

    parts: list[str] = field(default_factory=list)
    hashes: dict[str, int] = field(default_factory=dict)  # config hash -> committed rows
    done_ref: object = None  # ObjectRef of the sorted keys done under this run's hash

    @property
    def rows(self) -> int:
        return sum(self.hashes.values())


def load(output_uri: str, cfg, digest: str, new_config: bool) -> State:
    """The output's state, read in a Ray task; ConfigError when it holds rows of another
    config and `new_config` is not set."""
    import ray

    parts = committed_parts(output_uri, cfg)
    if not parts:
        return State()
    scan_remote = ray.remote(num_cpus=0.25, num_returns=2)(_scan_task)
    hashes_ref, done_ref = scan_remote.remote(parts, cfg, digest)
    try:
        hashes = ray.get(hashes_ref)
    except DamagedPart as exc:  # Ray's wrapper carries the task's stack: the message alone
        raise DamagedPart(str(getattr(exc, "cause", exc))) from None
    others = {h: n for h, n in hashes.items() if h != digest}
    if others and not new_config:
        raise ConfigError(refusal(output_uri, cfg, digest, others))
    return State(parts, hashes, done_ref)


def record_config(output_uri: str, cfg, digest: str) -> None:
    """This run's label settings recorded in the output, for later comparisons."""
    RunFolder(output_uri, cfg).record_config(digest, cfg.label_settings())


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[prefix + k] = v
    return out


def changed_keys(old: dict, new: dict) -> list[str]:
    a, b = _flat(old), _flat(new)
    return [f"{k} ({a.get(k)!r} -> {b.get(k)!r})" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def refusal(output_uri: str, cfg, digest: str, others: dict[str, int]) -> str:
    old_hash = max(others, key=others.get)
    old = RunFolder(output_uri, cfg).config_record(old_hash)
    if old is not None:
        changed = ", ".join(changed_keys(old, cfg.label_settings())[:8]) or "none recorded"
    else:
        changed = "unknown (no record of the old config)"
    rows = sum(others.values())
    return (f"{output_uri} holds {rows} rows labeled under config {old_hash}; this run's config is {digest} "
            f"(changed: {changed}); rerun with --new-config to label again beside them (rows told apart by "
            f"config_hash), or write to another --output")


# --- retrying failures ------------------------------------------------------------------


def take_failures_for_retry(output_uri: str, cfg) -> list[str]:
    """Set the failure parts aside for a retry and return them. If an earlier retry was
    interrupted, its set-aside parts are returned as they are (each failed clip is in
    them exactly once; what that retry already redid is skipped as finished)."""
    folder = RunFolder(output_uri, cfg)
    if not folder.parts(RETRIED):
        for u in folder.parts(FAILURES):
            if _read_columns(u, cfg, [col.CLIP_ID]).num_rows:  # schema-only parts stay
                folder.set_aside(u)
    return folder.parts(RETRIED)


def finish_retry(output_uri: str, cfg) -> None:
    """After a completed retry every set-aside clip has a new row: drop the old ones."""
    folder = RunFolder(output_uri, cfg)
    for u in folder.parts(RETRIED):
        folder.fs.rm(filesystem(u, cfg)[1])


def _aside_rows(uri: str, cfg) -> Iterator[dict]:
    """The clips of one set-aside failure part, as rows to run again (prior attempts kept);
    listing failures are not clips: they come back by reading their manifest again."""
    from emodist.io import rows

    t = _read_columns(uri, cfg, [col.CLIP_ID, col.URI, col.REF_LABEL, col.ERROR_STAGE, col.ATTEMPTS])
    for r in t.to_pylist():
        if r[col.ERROR_STAGE] == rows.LIST_STAGE and _is_listing(r[col.URI]):
            continue
        row = rows.ok(r[col.CLIP_ID], r[col.URI], r[col.REF_LABEL])
        row[carry.PRIOR_ATTEMPTS] = int(r[col.ATTEMPTS] or 0)
        yield row


def _is_listing(uri: str) -> bool:
    from emodist.io.suffixes import MANIFEST_SUFFIXES, SHARD_SUFFIXES, SPLIT_SUFFIXES, has_suffix

    return "#" not in uri and has_suffix(uri, MANIFEST_SUFFIXES + SPLIT_SUFFIXES + SHARD_SUFFIXES)


def _listings(parts: list[str], cfg) -> list[str]:
    """The manifests (or shards) whose lines failed to list, in the set-aside parts."""
    from emodist.io import rows

    out: set[str] = set()
    for uri in parts:
        t = _read_columns(uri, cfg, [col.URI, col.ERROR_STAGE]).to_pylist()
        out |= {r[col.URI] for r in t if r[col.ERROR_STAGE] == rows.LIST_STAGE and _is_listing(r[col.URI])}
    return sorted(out)


def retry_dataset(aside: list[str], cfg, done_ref):
    """The Ray dataset of everything to run again: the clips of the set-aside failures,
    and the manifests whose lines failed to list, read again (their clips already done,
    or among the set-aside ones, skipped)."""
    import ray

    from emodist.io.source import open_source
    from emodist.io.source import dataset_of

    generators = [(partial(_aside_rows, u, cfg), u) for u in aside]
    listings = ray.get(ray.remote(num_cpus=0.25)(_listings).remote(aside, cfg))
    if listings:
        # A clip of such a manifest that is retried as a clip must not come twice.
        skip = ray.remote(num_cpus=0.25)(_merge_keys).remote(done_ref, aside, cfg)
        relisted = [g for u in listings for g in open_source(u, cfg).row_generators()]
        return dataset_of(generators, cfg, done_ref).union(dataset_of(relisted, cfg, skip, check_local=True))
    return dataset_of(generators, cfg, done_ref)


def _merge_keys(done: np.ndarray | None, aside: list[str], cfg) -> np.ndarray:
    chunks = [done] if done is not None else []
    for uri in aside:
        t = _read_columns(uri, cfg, [col.CLIP_ID, col.URI])
        chunks.append(keys.clip_keys(t.column(col.CLIP_ID).to_pylist(), t.column(col.URI).to_pylist()))
    return keys.sorted_unique(chunks)


def count_rows(uris: list[str], cfg) -> int:
    """Rows in the given parts, from Parquet footers only."""
    total = 0
    for u in uris:
        fs, path = storage.filesystem(u, cfg)
        try:
            with fs.open(path, "rb") as f:
                total += pq.ParquetFile(f).metadata.num_rows
        except pa.ArrowInvalid as exc:
            raise damaged(u, exc) from None
    return total
