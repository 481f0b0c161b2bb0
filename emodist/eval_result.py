"""What `emodist eval` returns: the scores, the per-class table, the debiasing rows and the
counted problems, as dataclasses, and their plain-text table for a terminal. The numbers
are computed in eval_metrics.py and eval_debias.py; evaluate.py fills these."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

INVALID = "(invalid)"  # confusion-matrix column for answers outside the label set
N_EXAMPLES = 5


class EvalInputError(ValueError):
    """Predictions or manifest cannot be scored: names the input and the fix."""


@dataclass
class Problem:
    count: int = 0
    examples: list[str] = field(default_factory=list)
    effect: str = ""

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < N_EXAMPLES:
            self.examples.append(example)


@dataclass
class ClassMetrics:
    label: str
    support: int
    true_share: float
    predicted: int
    pred_share: float
    precision: float | None  # None: never predicted
    recall: float | None  # None: absent from the truth
    f1: float | None


@dataclass
class Sink:
    """The most-predicted class and how much more often it is said than true."""
    label: str
    pred_share: float
    true_share: float
    ratio: float | None  # None when the class never occurs in the truth


@dataclass
class MethodScores:
    method: str
    n: int
    uar: float | None = None
    war: float | None = None
    macro_f1: float | None = None
    sink: Sink | None = None
    skipped: str | None = None


@dataclass
class EvalResult:
    predictions_uri: str
    manifest_uri: str
    label_set: list[str]
    n: int
    uar: float
    war: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    ci: dict[str, list[float]]  # metric -> [low, high]
    ci_level: float
    bootstrap: int
    seed: int
    per_class: list[ClassMetrics]
    confusion: list[list[int]]  # rows: truth in label_set order; columns: confusion_cols
    confusion_cols: list[str]
    sink: Sink
    debias: list[MethodScores]
    debias_note: str
    problems: dict[str, Problem]
    calibration: dict | None = None  # emodist/calibration.py's block, when asked
    prevalence: dict | None = None  # emodist/prevalence.py's block, when asked
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def format_table(self) -> str:
        """Plain-text summary for a terminal."""
        def f(x: float | None) -> str:
            return "-" if x is None else f"{x:.4f}"

        lines = [f"{self.n} clips scored on {len(self.label_set)} classes ({self.predictions_uri})"]
        for m in ("uar", "war", "macro_precision", "macro_recall", "macro_f1"):
            ci = self.ci.get(m)
            band = f"  [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""
            lines.append(f"  {m:<16}{getattr(self, m):.4f}{band}")
        s = self.sink
        lines.append(f"  sink: '{s.label}' predicted {s.pred_share:.1%} vs true {s.true_share:.1%} "
                     f"(x{f(s.ratio)})")
        lines.append(f"  {'class':<16}{'support':>8}{'share':>8}{'recall':>8}{'f1':>8}{'pred%':>8}")
        for c in self.per_class:
            lines.append(f"  {c.label:<16}{c.support:>8}{c.true_share:>8.1%}{f(c.recall):>8}"
                         f"{f(c.f1):>8}{c.pred_share:>8.1%}")
        if self.debias:
            lines.append(f"  {'method':<16}{'n':>8}{'uar':>8}{'war':>8}{'macroF1':>8}  sink")
        for d in self.debias:
            if d.skipped:
                lines.append(f"  {d.method:<16}skipped: {d.skipped}")
            else:
                sink = f"{d.sink.label} x{f(d.sink.ratio)}" if d.sink else "-"
                lines.append(f"  {d.method:<16}{d.n:>8}{f(d.uar):>8}{f(d.war):>8}{f(d.macro_f1):>8}  {sink}")
        for name, p in self.problems.items():
            if p.count:
                lines.append(f"  problem {name}: {p.count} ({p.effect}) e.g. {', '.join(p.examples)}")
        return "\n".join(lines)
