"""Resume and retry: what an output folder already holds, and what is left to do.

A rerun of the same command skips every clip that already has a prediction or a
failure row. The finished ids are never gathered in the driver: Ray Data reads just
their `clip_id` column and anti-joins it with the listing, partition by partition.
`--retry-failures` moves the failure parts aside (under `failures/_retried/`, which
readers skip) and runs exactly those clips again, counting attempts.
"""
from __future__ import annotations

import posixpath

import fsspec
import pyarrow.dataset as pads

from emodist import schema as col

PRIOR_ATTEMPTS = "prior_attempts"
RETRIED_DIR = "_retried"


def _part_files(fs, folder: str) -> list[str]:
    if not fs.exists(folder):
        return []
    return sorted(p for p in fs.ls(folder, detail=False)
                  if posixpath.basename(p).startswith("part-") and p.endswith(".parquet"))


def finished_parts(output_uri: str) -> list[str]:
    """The committed part files under predictions/ and failures/, as full uris."""
    fs, root = fsspec.core.url_to_fs(output_uri)
    proto = output_uri.split("://", 1)[0] + "://" if "://" in output_uri else ""
    return [proto + p for sub in ("predictions", "failures") for p in _part_files(fs, posixpath.join(root, sub))]


def count_rows(uris: list[str]) -> int:
    """Rows in the given parts, from Parquet footers only."""
    if not uris:
        return 0
    fs, _ = fsspec.core.url_to_fs(uris[0])
    paths = [fsspec.core.url_to_fs(u)[1] for u in uris]
    return pads.dataset(paths, filesystem=fs, format="parquet").count_rows()


def skip_finished(clips, output_uri: str, parts: list[str], num_partitions: int):
    """The clips dataset without the ids already in `parts` (a Ray Data left anti-join)."""
    import ray

    if not parts:
        return clips
    done = ray.data.read_parquet(parts, columns=[col.CLIP_ID])
    return clips.join(done, join_type="left_anti", num_partitions=num_partitions, on=(col.CLIP_ID,))


def take_failures_for_retry(output_uri: str) -> list[str]:
    """Set the failure parts aside for a retry and return them. If an earlier retry was
    interrupted, its set-aside parts are returned as they are (each failed clip is in
    them exactly once; what that retry already redid is skipped as finished)."""
    fs, root = fsspec.core.url_to_fs(output_uri)
    proto = output_uri.split("://", 1)[0] + "://" if "://" in output_uri else ""
    failures = posixpath.join(root, "failures")
    aside = posixpath.join(failures, RETRIED_DIR)
    if not _part_files(fs, aside):
        fs.makedirs(aside, exist_ok=True)
        for p in _part_files(fs, failures):
            fs.mv(p, posixpath.join(aside, posixpath.basename(p)))
    return [proto + p for p in _part_files(fs, aside)]


def finish_retry(output_uri: str) -> None:
    """After a completed retry every set-aside clip has a new row: drop the old ones."""
    fs, root = fsspec.core.url_to_fs(output_uri)
    for p in _part_files(fs, posixpath.join(root, "failures", RETRIED_DIR)):
        fs.rm(p)


def retry_dataset(parts: list[str]):
    """(clip_id, uri, ref_label, prior_attempts) of the failures set aside, in Ray."""
    import ray

    ds = ray.data.read_parquet(parts, columns=[col.CLIP_ID, col.URI, col.REF_LABEL, col.ATTEMPTS])
    return ds.rename_columns({col.ATTEMPTS: PRIOR_ATTEMPTS})
