"""`emodist audit --report DIR`: issues.parquet, audit.json and the review page."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq

from emodist.audit import page, rank
from emodist.audit.read import AuditInputError, open_predictions, read_labels
from emodist.labels import resolve_label_set


def audit(predictions: str, labels_uri: str, report_dir: str | Path, cfg, *, against: str | None = None,
          config_hash: str | None = None, against_config_hash: str | None = None, top: int = 200,
          with_frames: bool = True) -> dict:
    """Rank the clips of `predictions` against the labels of `labels_uri` and write DIR;
    returns audit.json's content."""
    if top < 0:
        raise AuditInputError(f"--top must be >= 0, got {top}")
    start = time.perf_counter()
    labels = resolve_label_set(cfg.labels)
    preds = open_predictions(predictions, cfg, config_hash)
    other = open_predictions(against, cfg, against_config_hash, "--against-config-hash") if against else None
    man = read_labels(labels_uri, cfg, labels)
    r = rank.rank(preds, man, other)
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_issues = max(int(r.issue.sum()), 0)
    # issues.parquet: every flagged clip (and runs' disagreements), at least `top` rows
    # when that many were scored, so the page can fill up with the next most suspect.
    listed = r.order
    if len(listed) < top:
        scored = set(listed.tolist())
        rest = [int(i) for i in _by_score(r) if int(i) not in scored]
        listed = list(listed) + rest[: top - len(listed)]
    import numpy as np

    ranks = rank.rank_of(np.asarray(listed, dtype=np.int64), len(man.codes))
    issues = rank.details(preds, man, r, ranks)
    pq.write_table(issues, out / "issues.parquet")
    flips = rank.flip_table(man.codes, r.pred, labels)
    summary = {
        "predictions": predictions, "labels": labels_uri, "config_hash": preds.config_hash,
        "label_set": list(labels), "counts": r.counts | {"issues_listed": issues.num_rows,
                                                          "on_page": min(top, issues.num_rows)},
        "method": r.method, "settings": {"top": top, "against": against, "config_hash": config_hash,
                     "against_config_hash": against_config_hash},
        "flips": flips,
        "problems": {k: {"count": v.count, "examples": v.examples} for k, v in r.problems.items()}
        | {"manifest_label_outside_set": _listed(man.unknown_labels),
           "manifest_unreadable_lines": _listed(man.unreadable_lines),
           "manifest_duplicate_ids": _listed(man.duplicate_ids)},
    }
    if other is not None:
        summary["against"] = _agreement(r, man, labels, against, other.config_hash)
    summary["seconds"] = round(time.perf_counter() - start, 3)
    page_cards = page.cards(issues.slice(0, top), out, cfg, with_frames)
    method_line = (f"ranked by {r.method['ranked_by']}"
                   + (f" ({r.method['library']}, {rank.QUALITY_METHOD} scores)" if "library" in r.method
                      else f": {r.method.get('why', '')}")
                   + f"; {n_issues} flagged of {r.counts['scored'] or r.counts['manifest_clips']} clips")
    summary["page"] = str(page.write_page(out, page_cards, list(labels),
                                          {"title": f"emodist audit: {predictions}", "method_line": method_line}))
    (out / "audit.json").write_text(json.dumps(summary, indent=1))
    return summary


def _by_score(r: rank.Ranking):
    import numpy as np

    ok = np.flatnonzero(np.isfinite(r.score))
    return ok[np.argsort(r.score[ok], kind="stable")]


def _listed(x) -> dict:
    return {"count": x.count, "examples": x.examples}


def _agreement(r: rank.Ranking, man, labels, against: str, other_hash: str | None) -> dict:
    """Cohen's kappa and the flip table between the two runs, on the clips both labeled."""
    import numpy as np
    from sklearn.metrics import cohen_kappa_score

    both = (r.pred >= 0) & (r.other >= 0)
    kappa = float(cohen_kappa_score(r.pred[both], r.other[both], labels=list(range(len(labels))))) \
        if both.sum() > 1 else None
    return {
        "run": against, "config_hash": other_hash, "clips_both": int(both.sum()),
        "agree": int((both & (r.pred == r.other)).sum()),
        "cohen_kappa": None if kappa is None or np.isnan(kappa) else kappa,
        "disagree_and_both_leave_original": int((r.priority == 2).sum()),
        "flips_between_runs": rank.flip_table(np.where(both, r.pred, -1).astype(np.int8),
                                              np.where(both, r.other, -2).astype(np.int8), labels),
    }


def format_summary(s: dict) -> str:
    """Lines for the terminal."""
    c, f = s["counts"], s["flips"]
    lines = [f"{c['scored']} of {c['manifest_clips']} clips scored; {c['issues']} likely label errors "
             f"({s['method']['ranked_by']}); {f['flips']} flips"]
    if s["method"]["ranked_by"] == "flips only":
        lines.append(f"  ranking needs distributions: {s['method']['why']}")
    sink = f["sink"]
    if f["flips"]:
        lines.append(f"  flips go most into '{sink['label']}': {sink['flips_in']} of {f['flips']} "
                     f"({sink['share_of_flips']:.0%})")
    for lab, v in f["per_class"].items():
        if v["clips"]:
            lines.append(f"  {lab:<16}{v['clips']:>8} clips {v['share_flipped']:>7.1%} flipped")
    if "against" in s:
        a = s["against"]
        k = "-" if a["cohen_kappa"] is None else f"{a['cohen_kappa']:.3f}"
        lines.append(f"  against {a['run']}: kappa {k} on {a['clips_both']} clips, {a['agree']} agree; "
                     f"{a['disagree_and_both_leave_original']} where the runs disagree and both leave the label")
    for name, p in s["problems"].items():
        if p["count"]:
            lines.append(f"  problem {name}: {p['count']} e.g. {', '.join(p['examples'][:3])}")
    return "\n".join(lines)
