"""Likely label errors, ranked from the stored distributions, and the flip tables.

Confident learning is cleanlab's: its streaming `LabelInspector`, which gives the same
issues as `cleanlab.filter.find_label_issues(filter_by="low_self_confidence",
return_indices_ranked_by="self_confidence")` and the scores of
`cleanlab.rank.get_label_quality_scores` (tests/audit/test_rank.py checks both), in two
passes over the batches: per-class confident thresholds, then a score per clip. Memory
holds the manifest's ids, one label code and one float32 score per clip, and the top
rows only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from emodist import schema as col
from emodist.audit.read import Listed, Manifest, Predictions, distributions, label_codes

QUALITY_METHOD = "self_confidence"
TOP_K = 3  # probabilities kept per clip in issues.parquet


@dataclass
class Ranking:
    """Per manifest row: what the run said, its score, and the order to review in."""
    pred: np.ndarray  # int8 label code per manifest row; -1 outside the set, -2 no prediction
    score: np.ndarray  # float32 label quality (NaN: not scored)
    order: np.ndarray  # manifest rows to review, most suspect first
    issue: np.ndarray  # bool per manifest row: cleanlab flags it
    method: dict
    counts: dict
    problems: dict[str, Listed] = field(default_factory=dict)
    other: np.ndarray | None = None  # the --against run's codes, as `pred`
    priority: np.ndarray | None = None  # 2: runs disagree and both leave the label; 1: runs disagree
    positions: list[np.ndarray] = field(default_factory=list)  # manifest row of each prediction, per batch


def predicted_codes(preds: Predictions, man: Manifest, problems: dict[str, Listed],
                    positions: list[np.ndarray] | None = None) -> np.ndarray:
    """The run's label code for each manifest row (-2: no prediction); ids the manifest
    lacks, repeats and labels outside the set are listed. `positions` collects each
    batch's manifest rows (int32), so later passes over the same batches skip the join."""
    out = np.full(len(man.codes), -2, dtype=np.int8)
    for b in preds.batches([col.CLIP_ID, preds.pred_column]):
        m = man.locate(b.column(col.CLIP_ID))
        p = label_codes(b.column(preds.pred_column), man.labels)
        for i in np.flatnonzero(m < 0)[: 10 - len(problems["not_in_manifest"].examples)]:
            problems["not_in_manifest"].examples.append(str(b.column(col.CLIP_ID)[int(i)]))
        problems["not_in_manifest"].count += int((m < 0).sum())
        for i in np.flatnonzero(p < 0):
            problems["pred_label_outside_set"].add(
                f"{b.column(col.CLIP_ID)[int(i)]}: {b.column(preds.pred_column)[int(i)]!s}")
        hit = m >= 0
        new = np.flatnonzero(hit & (out[np.where(hit, m, 0)] == -2))  # not seen in earlier batches
        first = np.zeros(len(m), bool)
        first[new[np.unique(m[new], return_index=True)[1]]] = True  # nor earlier in this one
        again = hit & ~first
        for i in np.flatnonzero(again):
            problems["duplicate_prediction"].add(str(b.column(col.CLIP_ID)[int(i)]))
        out[m[first]] = p[first]
        if positions is not None:  # a repeated id counts once: its later rows join nothing
            positions.append(np.where(first, m, -1).astype(np.int32))
    return out


def rank(preds: Predictions, man: Manifest, other: Predictions | None = None) -> Ranking:
    """Score every clip with a known label and a distribution, and order the clips."""
    from cleanlab.experimental.label_issues_batched import LabelInspector

    problems = {k: Listed() for k in ("not_in_manifest", "duplicate_prediction", "pred_label_outside_set",
                                      "bad_distribution")}
    positions: list[np.ndarray] = []  # the join, once: 4 bytes a prediction row
    pred = predicted_codes(preds, man, problems, positions)
    missing = np.flatnonzero(pred == -2)
    problems["no_prediction"] = Listed(len(missing), [man.ids[int(i)].as_py() for i in missing[:10]])
    L = len(man.labels)
    score = np.full(len(man.codes), np.nan, dtype=np.float32)
    method: dict = {"distribution_column": col.PROBS}
    inspector = None
    if preds.has_distributions:
        inspector = LabelInspector(num_class=L, store_results=False, verbose=False,
                                   quality_score_kwargs={"method": QUALITY_METHOD})
        for step in ("thresholds", "scores"):
            for b, m in zip(preds.batches([col.CLIP_ID, col.LABEL_NAMES, col.PROBS]), positions, strict=True):
                m = m.astype(np.int64)
                d = distributions(b, man.labels)
                t = np.where(m >= 0, man.codes[np.where(m >= 0, m, 0)], -1)
                ok = (t >= 0) & np.isfinite(d).all(axis=1)
                if step == "thresholds":
                    for i in np.flatnonzero((m >= 0) & ~np.isfinite(d).all(axis=1)):
                        problems["bad_distribution"].add(str(b.column(col.CLIP_ID)[int(i)]))
                    if ok.any():
                        inspector.update_confident_thresholds(t[ok], d[ok])
                elif ok.any():
                    score[m[ok]] = inspector.score_label_quality(t[ok], d[ok])
        if inspector.examples_processed_thresh == 0:
            inspector = None
    scored = np.isfinite(score)
    if inspector is not None:
        import cleanlab

        n_issues = int(inspector.get_num_issues(silent=True))
        by_score = np.flatnonzero(scored)[np.argsort(score[scored], kind="stable")]
        issue = np.zeros(len(score), bool)
        issue[by_score[:n_issues]] = True
        by_score = by_score[:n_issues]
        method |= {
            "ranked_by": "cleanlab confident learning",
            "library": f"cleanlab {cleanlab.__version__}",
            "api": "cleanlab.experimental.label_issues_batched.LabelInspector (streaming), as "
                   "cleanlab.filter.find_label_issues(filter_by='low_self_confidence', "
                   f"return_indices_ranked_by='{QUALITY_METHOD}')",
            "quality_score": f"cleanlab.rank.get_label_quality_scores(method='{QUALITY_METHOD}'): the "
                             "probability of the original label; lower = more likely mislabeled",
            "num_issues": "as cleanlab.count.num_label_issues: clips whose predicted class reaches its "
                          "per-class confident threshold (mean self-confidence) and differs from the label; "
                          "that many lowest scores are flagged",
        }
    else:
        issue = (pred >= 0) & (man.codes >= 0) & (pred != man.codes)  # flips only
        by_score = np.flatnonzero(issue)
        method |= {"ranked_by": "flips only",
                   "why": f"the predictions carry no {col.LABEL_NAMES}/{col.PROBS}: a ranking needs the "
                          "distributions (an `emodist run` output has them); every clip whose predicted "
                          "label differs from the manifest's is listed, in manifest order"}
    ranking = Ranking(pred, score, by_score, issue, method, {}, problems, positions=positions)
    if other is not None:
        _against(ranking, other, man)
    ranking.counts = {
        "manifest_clips": len(man.codes), "predictions": int(preds.rows),
        "scored": int(scored.sum()), "issues": int(issue.sum()),
        "flips": int(((pred >= 0) & (man.codes >= 0) & (pred != man.codes)).sum()),
    }
    return ranking


def _against(r: Ranking, other: Predictions, man: Manifest) -> None:
    """Order clips the two runs disagree on first (those where both leave the original
    label before those where one keeps it), then by score."""
    r.problems["against_not_in_manifest"] = Listed()
    r.problems["against_duplicate_prediction"] = Listed()
    probs = {"not_in_manifest": r.problems["against_not_in_manifest"],
             "duplicate_prediction": r.problems["against_duplicate_prediction"],
             "pred_label_outside_set": Listed()}
    r.other = predicted_codes(other, man, probs)
    both = (r.pred >= 0) & (r.other >= 0)
    differ = both & (r.pred != r.other)
    leave = differ & (r.pred != man.codes) & (r.other != man.codes) & (man.codes >= 0)
    r.priority = differ.astype(np.int8) + leave.astype(np.int8)
    score = np.where(np.isfinite(r.score), r.score, np.inf)
    keep = r.issue | differ
    rows = np.flatnonzero(keep)
    r.order = rows[np.lexsort((score[rows], -r.priority[rows]))]


def flip_table(original: np.ndarray, new: np.ndarray, labels: tuple[str, ...]) -> dict:
    """Original x new label counts (rows and columns in label-set order, plus 'other'
    for answers outside the set), each class's share flipped, and where the flips go:
    the favourite class's inflow is the neutral sink seen as flips."""
    L = len(labels)
    ok = (original >= 0) & (new != -2)
    o, n = original[ok].astype(np.int64), np.where(new[ok] >= 0, new[ok], L).astype(np.int64)
    table = np.bincount(o * (L + 1) + n, minlength=L * (L + 1)).reshape(L, L + 1)
    support = table.sum(axis=1)
    flipped = support - np.diag(table[:, :L])
    inflow = table.sum(axis=0)[:L] - np.diag(table[:, :L])
    fav = int(np.argmax(inflow))
    total = int(flipped.sum())
    return {
        "labels": list(labels), "columns": list(labels) + ["other"], "counts": table.tolist(),
        "per_class": {labels[j]: {"clips": int(support[j]), "flipped": int(flipped[j]),
                                  "share_flipped": float(flipped[j] / support[j]) if support[j] else None}
                      for j in range(L)},
        "flips": total,
        "sink": {"label": labels[fav], "flips_in": int(inflow[fav]),
                 "share_of_flips": float(inflow[fav] / total) if total else None},
    }


def rank_of(order: np.ndarray, n_rows: int, n: int | None = None) -> np.ndarray:
    """Rank (0 = most suspect) per manifest row of the first n rows of `order`; -1 elsewhere."""
    out = np.full(n_rows, -1, dtype=np.int64)
    chosen = order if n is None else order[:n]
    out[chosen] = np.arange(len(chosen))
    return out


def details(preds: Predictions, man: Manifest, r: Ranking, ranks: np.ndarray) -> pa.Table:
    """issues.parquet's rows for the manifest rows with a rank, in rank order; one pass
    that keeps only those rows (as Arrow, a batch at a time)."""
    L = len(man.labels)
    schema = issues_schema(r.other is not None)
    cols = [col.CLIP_ID, col.URI, preds.pred_column, col.LABEL_NAMES, col.PROBS, col.DESCRIPTIONS,
            col.GAP_SPANS, col.KEYFRAME_TS]
    ranks = ranks.copy()
    parts = [schema.empty_table()]
    for b, m in zip(preds.batches(cols), r.positions, strict=True):
        m = m.astype(np.int64)
        hit = np.flatnonzero((m >= 0) & (ranks[np.where(m >= 0, m, 0)] >= 0))
        if not len(hit):
            continue
        sub = b.take(pa.array(hit))
        d = distributions(sub, man.labels) if preds.has_distributions else np.full((len(hit), L), np.nan)
        rows = []
        for k, row in enumerate(sub.to_pylist()):
            mi = int(m[hit[k]])
            if ranks[mi] < 0:  # a repeated id is shown once
                continue
            top = [] if np.isnan(d[k]).any() else list(np.argsort(-d[k], kind="stable")[:TOP_K])
            oc, oth = int(man.codes[mi]), (int(r.other[mi]) if r.other is not None else None)
            rows.append({
                "rank": int(ranks[mi]) + 1, col.CLIP_ID: row[col.CLIP_ID], col.URI: row.get(col.URI) or "",
                "original_label": man.labels[oc] if oc >= 0 else "",
                "predicted_label": str(row[preds.pred_column] or ""),
                "quality_score": None if np.isnan(r.score[mi]) else float(r.score[mi]),
                "is_issue": bool(r.issue[mi]),
                "top_labels": [man.labels[j] for j in top], "top_probs": [float(d[k][j]) for j in top],
                "distribution": [] if np.isnan(d[k]).any() else [float(x) for x in d[k]],
                col.DESCRIPTIONS: row.get(col.DESCRIPTIONS) or [],
                col.GAP_SPANS: row.get(col.GAP_SPANS) or [],
                col.KEYFRAME_TS: row.get(col.KEYFRAME_TS) or [],
                **({"other_label": man.labels[oth] if oth is not None and oth >= 0 else "",
                    "disagreement": int(r.priority[mi])} if r.other is not None else {}),
            })
            ranks[mi] = -1
        parts.append(pa.Table.from_pylist(rows, schema=schema))
    return pa.concat_tables(parts).sort_by("rank")


def issues_schema(against: bool) -> pa.Schema:
    fields = [("rank", pa.int64()), (col.CLIP_ID, pa.string()), (col.URI, pa.string()),
              ("original_label", pa.string()), ("predicted_label", pa.string()),
              ("quality_score", pa.float64()), ("is_issue", pa.bool_()),
              ("top_labels", pa.list_(pa.string())), ("top_probs", pa.list_(pa.float64())),
              ("distribution", pa.list_(pa.float64())), (col.DESCRIPTIONS, pa.list_(pa.string())),
              (col.GAP_SPANS, pa.list_(pa.list_(pa.float64()))), (col.KEYFRAME_TS, pa.list_(pa.float64()))]
    if against:
        fields += [("other_label", pa.string()), ("disagreement", pa.int8())]
    return pa.schema(fields)
