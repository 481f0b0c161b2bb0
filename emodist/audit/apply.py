"""`emodist audit --apply DECISIONS.csv`: the corrected manifest.

Same format as the input manifest (csv, parquet or jsonl; every column kept), `label`
set to the decided label where a person decided, and two provenance columns:
`original_label` (the manifest's) and `label_source` (`manifest`, or `review:<decision>`).
Clips nobody reviewed keep their label. Everything is checked before a byte is written:
a decision for a clip the manifest lacks, or a label outside the label set, is an error
naming it.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import pyarrow as pa

from emodist import schema as col
from emodist import storage
from emodist.audit.page import DECISIONS
from emodist.audit.read import AuditInputError
from emodist.io import lines, rows
from emodist.io.manifests import LABEL, base_for, tabular_batches, tabular_suffix
from emodist.labels import match_label

NEED = (col.CLIP_ID, "decision", "decided_label")


@dataclass
class Applied:
    rows: int
    changed: int
    reviewed: int
    output: str


def read_decisions(uri: str, cfg, labels: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """clip_id -> (decision, decided label) from the page's CSV; a bad line is an error
    naming the file and line."""
    fs, path = storage.filesystem(uri, cfg)
    if not fs.exists(path):
        raise AuditInputError(f"{uri}: decisions file not found; export it from the review page (index.html)")
    with fs.open(path, "rb") as f:
        reader = csv.reader(io.StringIO(f.read().decode("utf-8-sig", "replace"), newline=""))
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in NEED if c not in header]
    if missing:
        raise AuditInputError(f"{uri}: line 1: no {missing} column (header {header}); pass the CSV the review "
                              "page exports (clip_id,uri,original,decision,decided_label)")
    from emodist.io.manifests import csv_lines

    out: dict[str, tuple[str, str]] = {}
    where: dict[str, int] = {}
    for n, row, problem in csv_lines(reader, header):
        if problem:
            raise AuditInputError(f"{uri}: {problem}")
        rec = dict(zip(header, row))
        cid, decision = rec[col.CLIP_ID].strip(), rec["decision"].strip()
        if decision not in DECISIONS:
            raise AuditInputError(f"{uri}: line {n}: decision {decision!r} for {cid}; use one of {list(DECISIONS)}")
        label = match_label(rec["decided_label"], labels)
        if label is None:
            raise AuditInputError(f"{uri}: line {n}: label {rec['decided_label']!r} for {cid} is not in the label "
                                  f"set {list(labels)}; fix the line or pass the right --label-set")
        if cid in out:
            raise AuditInputError(f"{uri}: line {n}: a second decision for {cid} (first on line {where[cid]}); "
                                  "keep one line per clip")
        out[cid], where[cid] = (decision, label), n
    return out


def _ids(batch: pa.RecordBatch, base: str) -> list[str]:
    """The clip ids `run` gives these manifest rows (io/manifests.py's rule)."""
    names = batch.schema.names
    cids = batch.column(col.CLIP_ID).to_pylist() if col.CLIP_ID in names else [None] * batch.num_rows
    uris = batch.column(col.URI).to_pylist()
    return [str(c) if c not in (None, "") else rows.relative_id(lines.resolve_uri(str(u or "").strip(), base), base)
            for c, u in zip(cids, uris)]


def apply_decisions(decisions_uri: str, manifest_uri: str, output_uri: str, cfg,
                    labels: tuple[str, ...]) -> Applied:
    """Write the corrected manifest; returns what changed."""
    from emodist.sampling import _Writer

    try:
        suffix = tabular_suffix(manifest_uri)
    except ValueError:
        raise AuditInputError(f"{manifest_uri}: --apply writes the manifest back in its own format, and a split "
                              "file has no room for the provenance columns; pass a csv/parquet/jsonl manifest") from None
    if tabular_suffix(output_uri) != suffix:
        raise AuditInputError(f"{output_uri}: the corrected manifest keeps the input's format; name it *{suffix}")
    if storage.absolute(output_uri) == storage.absolute(manifest_uri):
        raise AuditInputError(f"{output_uri}: would overwrite the input manifest; write the corrected one elsewhere")
    decided = read_decisions(decisions_uri, cfg, labels)
    base = base_for(manifest_uri, cfg)
    first = next(tabular_batches(manifest_uri, cfg), None)
    if first is None or col.URI not in first.schema.names:
        raise AuditInputError(f"{manifest_uri}: no 'uri' column; pass the manifest the audit read")
    found: set[str] = set()
    for b in tabular_batches(manifest_uri, cfg):
        found.update(c for c in _ids(b, base) if c in decided)
    absent = [c for c in decided if c not in found]
    if absent:
        raise AuditInputError(f"{decisions_uri}: {len(absent)} decided clip(s) not in {manifest_uri}: "
                              f"{', '.join(absent[:5])}; audit and apply against the same manifest")
    writer = _Writer(output_uri, cfg)
    n = changed = 0
    try:
        for b in tabular_batches(manifest_uri, cfg):
            ids = _ids(b, base)
            old = (b.column(LABEL).cast(pa.string()).fill_null("").to_pylist() if LABEL in b.schema.names
                   else [""] * b.num_rows)
            new, source = [], []
            for cid, lab in zip(ids, old):
                d = decided.get(cid)
                new.append(d[1] if d else lab)
                source.append(f"review:{d[0]}" if d else "manifest")
                changed += bool(d) and match_label(lab, labels) != d[1]
            n += b.num_rows
            t = pa.Table.from_batches([b]).drop_columns(
                [c for c in ("original_label", "label_source") if c in b.schema.names])
            if LABEL in t.column_names:  # the label stays where the manifest has it
                t = t.set_column(t.column_names.index(LABEL), LABEL, pa.array(new, pa.string()))
            else:
                t = t.append_column(LABEL, pa.array(new, pa.string()))
            t = t.append_column("original_label", pa.array(old, pa.string()))
            t = t.append_column("label_source", pa.array(source, pa.string()))
            for batch in t.to_batches():
                writer.write(batch)
    finally:
        writer.close()
    return Applied(n, int(changed), len(decided), output_uri)

