"""Resume and retry: what an output folder already holds, and what is left to do.

A rerun of the same command skips every clip that already has a prediction or a
failure row. Finished rows are never gathered in the driver: it streams the `clip_id`
column part by part and keeps only a sorted array of 64-bit id hashes (8 bytes a clip:
80 MB for 10M clips), which the filter tasks read from Ray's object store. (A Ray Data
anti-join also works but pays a hash shuffle, ~12 s even for a few rows.)
`--retry-failures` moves the failure parts aside (under `failures/_retried/`, which
readers skip) and runs exactly those clips again, counting attempts.
"""
from __future__ import annotations

import hashlib
import posixpath

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from emodist import schema as col
from emodist.storage import filesystem, protocol_prefix, pyarrow_filesystem

PRIOR_ATTEMPTS = "prior_attempts"
RETRIED_DIR = "_retried"


def _part_files(fs, folder: str) -> list[str]:
    if not fs.exists(folder):
        return []
    return sorted(p for p in fs.ls(folder, detail=False)
                  if posixpath.basename(p).startswith("part-") and p.endswith(".parquet"))


def finished_parts(output_uri: str, cfg) -> list[str]:
    """The committed part files under predictions/ and failures/, as full uris."""
    fs, root = filesystem(output_uri, cfg)
    proto = protocol_prefix(output_uri)
    return [proto + p for sub in ("predictions", "failures") for p in _part_files(fs, posixpath.join(root, sub))]


def count_rows(uris: list[str], cfg) -> int:
    """Rows in the given parts, from Parquet footers only."""
    if not uris:
        return 0
    fs, _ = filesystem(uris[0], cfg)
    paths = [filesystem(u, cfg)[1] for u in uris]
    return pads.dataset(paths, filesystem=fs, format="parquet").count_rows()


def id_hashes(ids) -> np.ndarray:
    """Stable 64-bit hashes of clip ids (a collision needs ~4e9 ids to become likely)."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "little") for i in ids),
        dtype=np.uint64,
    )


def finished_hashes(parts: list[str], cfg) -> np.ndarray:
    """Sorted hashes of every clip id in `parts`, read one part's id column at a time."""
    chunks = []
    for uri in parts:
        fs, path = filesystem(uri, cfg)
        with fs.open(path, "rb") as f:
            chunks.append(id_hashes(pq.read_table(f, columns=[col.CLIP_ID]).column(0).to_pylist()))
    return np.unique(np.concatenate(chunks)) if chunks else np.zeros(0, np.uint64)


def _drop_finished(batch: dict, done_ref) -> dict:
    import ray

    done = ray.get(done_ref[0])
    keep = ~np.isin(id_hashes(batch[col.CLIP_ID]), done)
    return {k: v[keep] for k, v in batch.items()}


def skip_finished(clips, parts: list[str], cfg):
    """The clips dataset without the ids already in `parts`."""
    import ray

    if not parts:
        return clips
    done_ref = ray.put(finished_hashes(parts, cfg))
    # The ref travels wrapped in a list so Ray hands the task the ref, not a copy per call.
    return clips.map_batches(_drop_finished, fn_kwargs={"done_ref": [done_ref]}, batch_format="numpy",
                             batch_size=None, num_cpus=0.25)


def take_failures_for_retry(output_uri: str, cfg) -> list[str]:
    """Set the failure parts aside for a retry and return them. If an earlier retry was
    interrupted, its set-aside parts are returned as they are (each failed clip is in
    them exactly once; what that retry already redid is skipped as finished)."""
    fs, root = filesystem(output_uri, cfg)
    proto = protocol_prefix(output_uri)
    failures = posixpath.join(root, "failures")
    aside = posixpath.join(failures, RETRIED_DIR)
    if not _part_files(fs, aside):
        fs.makedirs(aside, exist_ok=True)
        for p in _part_files(fs, failures):
            fs.mv(p, posixpath.join(aside, posixpath.basename(p)))
    return [proto + p for p in _part_files(fs, aside)]


def finish_retry(output_uri: str, cfg) -> None:
    """After a completed retry every set-aside clip has a new row: drop the old ones."""
    fs, root = filesystem(output_uri, cfg)
    for p in _part_files(fs, posixpath.join(root, "failures", RETRIED_DIR)):
        fs.rm(p)


def retry_dataset(parts: list[str], cfg):
    """(clip_id, uri, ref_label, prior_attempts) of the failures set aside, in Ray."""
    import ray

    # The fsspec filesystem carries the configured endpoint (storage.endpoint_url);
    # pyarrow's own S3 would not. Paths go without their protocol.
    fs, _ = filesystem(parts[0], cfg)
    paths = [filesystem(u, cfg)[1] for u in parts]
    ds = ray.data.read_parquet(paths, filesystem=pyarrow_filesystem(fs),
                               columns=[col.CLIP_ID, col.URI, col.REF_LABEL, col.ATTEMPTS])
    return ds.rename_columns({col.ATTEMPTS: PRIOR_ATTEMPTS})
