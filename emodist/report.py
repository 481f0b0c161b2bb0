"""Write an evaluation as a folder: report.md, metrics.json and PNG plots.

The plots are chosen to make the long-tail collapse visible at a glance: a
row-normalized confusion matrix (the "neutral sink" is a bright column) and
per-class recall against how common the class is in the truth.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global backend state, safe in workers
from matplotlib.ticker import NullFormatter

from emodist.calibration import RELIABILITY_PNG, plot_reliability
from emodist.eval_result import EvalResult

CONFUSION_PNG = "confusion.png"
RECALL_PNG = "recall_vs_frequency.png"


def _f(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:.1%}" if pct else f"{x:.4f}"


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def plot_confusion(result: EvalResult, path: Path) -> None:
    cm = np.asarray(result.confusion, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)  # share of each true class
    n_rows, n_cols = cm.shape
    fig = Figure(figsize=(1.0 + 0.9 * n_cols, 1.0 + 0.8 * n_rows), dpi=100)
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(n_rows):
        for j in range(n_cols):
            ax.text(j, i, f"{int(cm[i, j])}\n{norm[i, j]:.0%}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(n_cols), result.confusion_cols, rotation=45, ha="right")
    ax.set_yticks(range(n_rows), result.label_set)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix (row-normalized; n={result.n})")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path)


def plot_recall_vs_frequency(result: EvalResult, path: Path) -> None:
    classes = [c for c in result.per_class if c.support > 0]
    fig = Figure(figsize=(6.5, 4.5), dpi=100)
    ax = fig.add_subplot()
    x = [c.true_share for c in classes]
    ax.scatter(x, [c.recall for c in classes], label="recall", color="tab:blue")
    ax.scatter(x, [c.f1 for c in classes], label="F1", color="tab:orange", marker="x")
    for k, c in enumerate(sorted(classes, key=lambda c: c.true_share)):
        # alternate label offsets so neighbours of similar frequency stay readable
        ax.annotate(c.label, (c.true_share, c.recall), textcoords="offset points",
                    xytext=(4, 5 if k % 2 == 0 else -11), fontsize=8)
    ax.axhline(result.uar, color="gray", linestyle="--", linewidth=1, label=f"UAR {result.uar:.3f}")
    ax.set_xscale("log")
    ticks = [t for t in (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
             if min(x, default=1) / 2 <= t <= max(x, default=1) * 2]
    ax.set_xticks(ticks, [f"{t:.1%}" if t < 0.01 else f"{t:.0%}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("class frequency in the truth (log scale)")
    ax.set_ylabel("per-class score")
    ax.set_title("Per-class recall vs class frequency")
    ax.legend(loc="best", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def _markdown(r: EvalResult) -> str:
    out = [
        "# emodist evaluation", "",
        f"- predictions: `{r.predictions_uri}`", f"- manifest: `{r.manifest_uri}`",
        f"- label set ({len(r.label_set)}): {', '.join(r.label_set)}",
        f"- clips scored: {r.n}", "",
        "## Metrics", "",
        "UAR = mean per-class recall over the classes present in the truth; WAR = accuracy; "
        f"macro scores average over the same classes. Intervals: {r.ci_level:.0%} percentile "
        f"bootstrap, {r.bootstrap} resamples, seed {r.seed}.", "",
    ]
    names = {"uar": "UAR", "war": "WAR", "macro_precision": "macro precision",
             "macro_recall": "macro recall", "macro_f1": "macro-F1"}
    out.append(_md_table(["metric", "value", f"{r.ci_level:.0%} CI"], [
        [label, _f(getattr(r, key)), "-" if key not in r.ci else f"[{r.ci[key][0]:.4f}, {r.ci[key][1]:.4f}]"]
        for key, label in names.items()]))
    out += ["", "## Per class (most frequent first)", ""]
    out.append(_md_table(
        ["class", "support", "share of truth", "share of predictions", "precision", "recall", "F1"],
        [[c.label, str(c.support), _f(c.true_share, True), _f(c.pred_share, True), _f(c.precision),
          _f(c.recall), _f(c.f1)] for c in sorted(r.per_class, key=lambda c: -c.support)]))
    s = r.sink
    ratio = f"x{s.ratio:.2f}" if s.ratio is not None else "never true"
    out += ["", "## Neutral sink", "",
            f"The most-predicted class is **{s.label}**: {_f(s.pred_share, True)} of predictions against "
            f"{_f(s.true_share, True)} of the truth ({ratio}). A ratio well above 1 means rarer classes "
            "collapse into it.", "", "## Debiasing comparison (post hoc)", "", r.debias_note, ""]
    if r.debias:
        out.append(_md_table(["method", "n", "UAR", "WAR", "macro-F1", "most predicted (pred/true)"], [
            [d.method, str(d.n), "-", "-", "-", f"skipped: {d.skipped}"] if d.skipped else
            [d.method, str(d.n), _f(d.uar), _f(d.war), _f(d.macro_f1),
             f"{d.sink.label} (x{d.sink.ratio:.2f})" if d.sink and d.sink.ratio else "-"]
            for d in r.debias]))
    out += ["", "## Problems", ""]
    found = {k: p for k, p in r.problems.items() if p.count}
    out.append(_md_table(["problem", "count", "effect", "examples"], [
        [k, str(p.count), p.effect, ", ".join(f"`{e}`" for e in p.examples)] for k, p in found.items()])
        if found else "None: every clip matched once, with labels in the label set.")
    out += _calibration_md(r)
    out += ["", "## Plots", "", f"![confusion matrix]({CONFUSION_PNG})", "",
            f"![recall vs class frequency]({RECALL_PNG})", ""]
    if r.calibration:
        out += [f"![reliability diagram]({RELIABILITY_PNG})", ""]
    return "\n".join(out)


def _calibration_md(r: EvalResult) -> list[str]:
    """Calibration (ECE, Brier, NLL; before/after temperature scaling) and class shares."""
    out: list[str] = []
    c = r.calibration
    if c:
        out += ["", "## Calibration", "",
                f"From the rows' `{c['distribution_column']}` on {c['clips']} clips; ECE over {c['bins']} "
                "equal-width confidence bins." + (f" Temperature T = {c['temperature']:.3f}, fitted on "
                                                  f"`{c['fitted_on']}` ({c['calibration_clips']} clips)."
                                                  if "after" in c else " No --calibrate-on: no temperature fitted."), ""]
        phases = [p for p in ("before", "after") if p in c]
        out.append(_md_table(["", *phases], [[m, *[_f(c[p][m]) for p in phases]] for m in ("ece", "brier", "nll")]))
    p = r.prevalence
    if p:
        ci = p.get("ci", {})
        key = "em" if "em" in p["estimates"] else "confusion_corrected"
        band = lambda k, lab: f" [{ci[k][lab][0]:.3f}, {ci[k][lab][1]:.3f}]" if k in ci else ""  # noqa: E731
        out += ["", "## Class shares", "",
                f"{p['corpus_clips']} predicted clips; adjusted with {p['calibration_clips']} labeled clips of "
                f"`{p['calibrate_on']}` by {p['adjusted_method']}; {p['ci_level']:.0%} bootstrap intervals "
                f"({p['bootstrap']} resamples).", ""]
        out.append(_md_table(["class", "raw", "confusion-corrected", "adjusted"], [
            [lab, f"{p['raw'][lab]:.3f}{band('raw', lab)}",
             f"{p['estimates']['confusion_corrected'][lab]:.3f}{band('confusion_corrected', lab)}",
             f"{p['adjusted'][lab]:.3f}{band(key, lab)}"] for lab in p["raw"]]))
    for n in r.notes:
        out += ["", f"- {n}"]
    return out


def write_report(result: EvalResult, out_dir: str | Path) -> Path:
    """Write report.md, metrics.json, confusion.png and recall_vs_frequency.png into
    out_dir (a local folder, created if needed); returns the path of report.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result.to_dict(), indent=2))
    plot_confusion(result, out / CONFUSION_PNG)
    plot_recall_vs_frequency(result, out / RECALL_PNG)
    if result.calibration:
        plot_reliability(result.calibration, out / RELIABILITY_PNG)
    md = out / "report.md"
    md.write_text(_markdown(result))
    return md
