"""Score emotion predictions against a manifest's reference labels.

UAR (mean per-class recall), WAR (accuracy), macro P/R/F1, per-class numbers, the
confusion matrix, the "neutral sink", bootstrap intervals, and - when predictions
carry the model's raw distributions - the same metrics after each post-hoc debiasing
method. Bad rows are counted in `problems`, never dropped silently.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
import sklearn
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from emodist import debias
from emodist import schema as col
from emodist.labels import canonical, match_label, resolve_label_set
from emodist import storage
from emodist.io.detect import read_manifest
from emodist.io.rows import clip_id_for

PRED_COLUMNS = (col.LABEL, "pred", "prediction")
INVALID = "(invalid)"  # confusion-matrix column for answers outside the label set
N_EXAMPLES = 5
METRICS = ("uar", "war", "macro_f1")


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


def _csv_lines(data: bytes, uri: str, bad: list[str]) -> pa.Table:
    """A CSV read line by line as `run` reads a CSV manifest (io/manifests.py): every value
    as text; a line with too many or too few fields, or that does not parse, goes to `bad`
    as '<file>: line N: <problem>; <fix>' instead of aborting the whole evaluation."""
    name = storage.scrub(uri)  # named as the manifest reader names its file
    reader = csv.reader(io.StringIO(data.decode("utf-8", "replace"), newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except (StopIteration, csv.Error) as exc:
        raise EvalInputError(f"{uri}: line 1: the header does not parse as CSV ({exc}); fix the file") from None
    from emodist.io.manifests import csv_lines

    cells: list[list[str]] = []
    for _, row, problem in csv_lines(reader, header):
        if problem:
            bad.append(f"{name}: {problem}")
        else:
            cells.append(row)
    return pa.table({h: pa.array([r[k] for r in cells], pa.string()) for k, h in enumerate(header)})


def _read_file(uri: str, cfg, bad: list[str] | None = None) -> pa.Table:
    """A predictions file; lines of a CSV that do not parse are added to `bad` (see _csv_lines)."""
    fs, path = storage.filesystem(uri, cfg)
    suffix = PurePosixPath(path).suffix.lower()
    with fs.open(path, "rb") as f:
        if suffix == ".parquet":
            return pq.read_table(f)
        if suffix == ".csv":  # ids stay strings: '0001' must not become 1
            data = f.read()
            opts = pacsv.ConvertOptions(column_types={col.CLIP_ID: pa.string()}, strings_can_be_null=False)
            try:
                return pacsv.read_csv(pa.BufferReader(data), convert_options=opts)
            except pa.ArrowInvalid:
                # Arrow names neither the file nor the line ("CSV parse error: Expected 3
                # columns, got 4"): read it as `run` reads a manifest, bad lines counted.
                return _csv_lines(data, uri, bad if bad is not None else [])
        if suffix == ".jsonl":
            return pajson.read_json(f)
    raise EvalInputError(f"{uri}: predictions must be an `emodist run` folder or a .csv/.parquet/.jsonl file")


def read_predictions(uri: str, cfg, bad: list[str] | None = None) -> tuple[pa.Table, list[str]]:
    """Prediction rows, and the clip ids listed under failures/ (for a run folder); lines of
    a CSV file that do not parse are added to `bad`."""
    fs, path = storage.filesystem(uri, cfg)
    if not fs.isdir(path):
        if not fs.exists(path):
            raise EvalInputError(f"{uri}: not found; pass an `emodist run` output folder or a file")
        return _read_file(uri, cfg, bad), []
    proto = uri.split("://", 1)[0] + "://" if "://" in uri else ""
    base = path.rstrip("/")
    root = base + "/predictions" if fs.isdir(base + "/predictions") else base
    # hidden and _-prefixed names are parts still being written (see writer.py)
    files = [p for p in sorted(fs.glob(root + "/*.parquet")) if PurePosixPath(p).name[0] not in "._"]
    if not files:
        raise EvalInputError(f"{uri}: no predictions/*.parquet inside; pass an `emodist run` output folder")
    table = pa.concat_tables([_read_file(proto + p, cfg) for p in files], promote_options="permissive")
    failed: list[str] = []
    for p in sorted(fs.glob(base + "/failures/*.parquet")):
        failed += [str(x) for x in _read_file(proto + p, cfg).column(col.CLIP_ID).to_pylist()]
    return table, failed


def _dedup(ids: list[str], problem: Problem) -> dict[str, int]:
    """First row index per id; every later repeat is counted."""
    first: dict[str, int] = {}
    for i, cid in enumerate(ids):
        if cid in first:
            problem.add(cid)
        else:
            first[cid] = i
    return first


def _scores(t: np.ndarray, p: np.ndarray, w: np.ndarray | None = None) -> tuple[float, float, float]:
    """UAR, WAR, macro-F1; macro over the classes present in the truth."""
    present = np.unique(t)
    _, rec, f1, _ = precision_recall_fscore_support(
        t, p, labels=present, sample_weight=w, zero_division=0.0)
    return float(rec.mean()), float(accuracy_score(t, p, sample_weight=w)), float(f1.mean())


def _bootstrap(t: np.ndarray, p: np.ndarray, n_classes: int, b: int, seed: int, level: float) -> dict:
    # Resampling rows equals a multinomial draw over the (truth, pred) cells, so each
    # resample is scored on <= L*(L+1) weighted cells instead of n rows: same law, faster.
    cells, counts = np.unique(t * (n_classes + 1) + p, return_counts=True)
    ct, cp = np.divmod(cells, n_classes + 1)
    draws = np.random.default_rng(seed).multinomial(len(t), counts / len(t), size=b)
    vals = np.empty((b, len(METRICS)))
    with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
        for i, w in enumerate(draws):
            m = w > 0
            vals[i] = _scores(ct[m], cp[m], w[m])
    lo, hi = np.percentile(vals, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return {m: [float(lo[j]), float(hi[j])] for j, m in enumerate(METRICS)}


def _sink(t: np.ndarray, p: np.ndarray, labels: Sequence[str]) -> Sink:
    pred_counts = np.bincount(p, minlength=len(labels) + 1)[: len(labels)]  # without invalid answers
    c = int(np.argmax(pred_counts))
    ps, ts = pred_counts[c] / len(t), float(np.mean(t == c))
    return Sink(labels[c], float(ps), ts, float(ps / ts) if ts > 0 else None)


def _distributions(ids: list[str], names_col: list, probs_col: list, labels: Sequence[str],
                   bad: Problem) -> np.ndarray:
    """(N, L) raw distributions in label-set order; rows that cannot be used are NaN."""
    index = {n: i for i, n in enumerate(labels)}
    out = np.full((len(probs_col), len(labels)), np.nan)
    for i, (names, probs) in enumerate(zip(names_col, probs_col)):
        if not names or not probs or len(names) != len(probs):
            bad.add(f"{ids[i]}: label_names/probs_raw missing or of different lengths")
            continue
        row = np.zeros(len(labels))
        for n, v in zip(names, probs):
            j = index.get(canonical(n))
            if j is not None:
                row[j] += v or 0.0
        if not np.all(np.isfinite(row)) or row.min() < 0 or row.sum() <= 0:
            bad.add(f"{ids[i]}: no usable probability on the label set")
            continue
        out[i] = row
    return out


def _training_prior(prior_from: str | None, manifest_uri: str, cfg, labels: Sequence[str]) -> tuple[np.ndarray | None, str]:
    """(prior, where it comes from) for logit adjustment, or (None, why it is skipped).
    Never the evaluated manifest's own class frequencies: a prior counted from the test
    labels tells the debiased figure the answers."""
    if prior_from:
        if storage.absolute(prior_from) == storage.absolute(manifest_uri):
            return None, (f"--prior-from is the evaluated manifest itself ({manifest_uri}): its class "
                          "frequencies are the test labels; pass the training manifest")
        try:
            man, _ = read_manifest(prior_from, cfg)
        except storage.SourceError as exc:
            raise EvalInputError(str(exc)) from None
        try:
            shares = debias.prior_from_labels(man.column(col.REF_LABEL).to_pylist(), labels, smoothing=0)
        except ValueError:
            raise EvalInputError(f"{prior_from}: no label in the label set {list(labels)}; pass a training "
                                 "manifest with a 'label' column (--prior-from)") from None
        # Smoothed: a class the training set lacks must not win every clip (debias.smooth_prior).
        return debias.smooth_prior(shares), f"the class frequencies of {prior_from}"
    prior = getattr(getattr(cfg, "labeler", None), "prior", None)
    if prior is not None and len(prior) == len(labels):
        return debias.smooth_prior(prior), "labeler.prior"
    return None, ("no training prior: pass --prior-from TRAIN_MANIFEST or set labeler.prior (the evaluated "
                  "manifest's own class frequencies would leak its labels)")


def _compare(dists: np.ndarray, ok: np.ndarray, rows: np.ndarray, t: np.ndarray, stored: np.ndarray,
             labels: Sequence[str], prior: np.ndarray | None, prior_note: str, content_free: object,
             tau: float = 1.0) -> list[MethodScores]:
    """Metrics of the stored label, raw argmax and each post-hoc debias method on the
    evaluated rows that have a distribution. Batch calibration sees every prediction."""
    sel = ok[rows]
    tt, n = t[sel], int(sel.sum())
    pos = np.cumsum(ok) - 1  # row in the ok-only matrix
    out = [_method("stored label", tt, stored[sel], labels)]
    full = dists[ok]
    kws: dict[str, dict] = {"none": {}, "batch": {}}
    if prior is not None:
        kws["logit_adjust"] = {"prior": prior, "tau": tau}
    if content_free is not None:
        kws["contextual"] = {"content_free": content_free}
    skipped = {"contextual": "no content-free distribution given (content_free=)", "logit_adjust": prior_note}
    for method in debias.METHODS:
        name = "raw" if method == "none" else method
        if method not in kws:
            out.append(MethodScores(name, n, skipped=skipped[method]))
            continue
        adjusted = debias.apply(method, full, **kws[method])
        out.append(_method(name, tt, adjusted.argmax(axis=1)[pos[rows[sel]]], labels))
    return out


def _method(name: str, t: np.ndarray, p: np.ndarray, labels: Sequence[str]) -> MethodScores:
    uar, war, f1 = _scores(t, p)
    return MethodScores(name, len(t), uar, war, f1, _sink(t, p, labels))


def _content_free_vector(cf: object, labels: Sequence[str]) -> np.ndarray | None:
    """A list in label-set order, a {label: p} mapping, or either as JSON text or a JSON file."""
    if isinstance(cf, str | Path):
        text = str(cf).strip()
        cf = json.loads(text if text[:1] in "[{" else Path(text).read_text())
    if cf is None or not isinstance(cf, Mapping):
        return None if cf is None else np.asarray(cf, dtype=np.float64)
    vec = {canonical(k): float(v) for k, v in cf.items()}
    missing = [lab for lab in labels if lab not in vec]
    if missing:
        raise EvalInputError(f"content_free has no probability for {missing}; give one per label")
    return np.array([vec[lab] for lab in labels])


def evaluate(predictions_uri: str, manifest_uri: str, *, label_set: str | Sequence[str] = "dfew",
             bootstrap: int = 1000, seed: int = 0, content_free: object = None,
             ci_level: float = 0.95, cfg=None, prior_from: str | None = None,
             config_hash: str | None = None) -> EvalResult:
    """Score predictions (run folder or csv/parquet/jsonl) against a manifest's labels.
    The manifest is read as `run` reads its input (every manifest and split-file format,
    `input.root`, storage settings from `cfg`); lines that do not parse are counted.
    Logit adjustment takes its prior from training data only: the labels of `prior_from`
    (a training manifest), else `cfg.labeler.prior`; without either it is skipped."""
    from emodist.config import Config

    labels = resolve_label_set(label_set)
    if cfg is None:
        cfg = Config(labels=label_set if isinstance(label_set, str) else list(label_set))
    L = len(labels)
    if bootstrap < 0 or not 0 < ci_level < 1:
        raise ValueError(f"need bootstrap >= 0 and 0 < ci_level < 1, got {bootstrap}, {ci_level}")
    problems = {k: Problem(effect=e) for k, e in (
        ("duplicate_prediction_ids", "first row kept, repeats ignored"),
        ("duplicate_manifest_ids", "first row kept, repeats ignored"),
        ("prediction_not_in_manifest", "not scored"),
        ("missing_prediction", "manifest clip not scored"),
        ("failed_clips", "listed under failures/; not scored"),
        ("unknown_truth_label", "reference label outside the label set or empty; not scored"),
        ("unknown_pred_label", f"answer outside the label set; scored as wrong ({INVALID})"),
        ("bad_distribution", "row left out of the debiasing comparison"),
        ("unreadable_manifest_lines", "manifest line that does not parse; not scored"),
        ("unreadable_prediction_lines", "predictions line that does not parse; not scored"),
    )}
    bad_pred_lines: list[str] = []
    table, failed = read_predictions(predictions_uri, cfg, bad_pred_lines)
    if config_hash is not None:  # rows of one config of a folder written with run --new-config
        import pyarrow.compute as pc

        table = table.filter(pc.equal(table.column(col.CONFIG_HASH), config_hash))
    for line in bad_pred_lines:
        problems["unreadable_prediction_lines"].add(line)
    names = table.column_names
    if col.CLIP_ID in names:
        ids = [str(x) for x in table.column(col.CLIP_ID).to_pylist()]
    elif col.URI in names:
        ids = [clip_id_for(str(u)) for u in table.column(col.URI).to_pylist()]
    else:
        raise EvalInputError(
            f"{predictions_uri}: no '{col.CLIP_ID}' or '{col.URI}' column (columns: {names})")
    pred_col = next((c for c in PRED_COLUMNS if c in names), None)
    if pred_col is None:
        raise EvalInputError(f"{predictions_uri}: no predicted-label column; name it one of {PRED_COLUMNS}")
    raw_preds = table.column(pred_col).to_pylist()
    pred_first = _dedup(ids, problems["duplicate_prediction_ids"])
    for cid in failed:
        problems["failed_clips"].add(cid)

    try:
        man, bad_lines = read_manifest(manifest_uri, cfg)
    except storage.SourceError as exc:
        raise EvalInputError(str(exc)) from None
    prior, source = _training_prior(prior_from, manifest_uri, cfg, labels)  # a bad --prior-from fails here
    for r in bad_lines:
        problems["unreadable_manifest_lines"].add(r[col.ERROR_MESSAGE].removeprefix("list: "))
    man_ids = man.column(col.CLIP_ID).to_pylist()
    man_labels = man.column(col.REF_LABEL).to_pylist()
    man_first = _dedup(man_ids, problems["duplicate_manifest_ids"])
    for cid in pred_first:
        if cid not in man_first:
            problems["prediction_not_in_manifest"].add(cid)
            if cid.lstrip("0") in man_first:  # a CSV reader turned '0001' into 1
                problems["prediction_not_in_manifest"].effect = (
                    "not scored; ids match once leading zeros are stripped: store clip_id as text")
    code = {lab: i for i, lab in enumerate(labels)}
    rows, t, p = [], [], []
    for cid, mi in man_first.items():
        truth = match_label(man_labels[mi], labels)
        if truth is None:
            problems["unknown_truth_label"].add(f"{cid}: {man_labels[mi]!r}")
            continue
        pi = pred_first.get(cid)
        if pi is None:
            problems["missing_prediction"].add(cid)
            continue
        pred = match_label(raw_preds[pi], labels)
        if pred is None:
            problems["unknown_pred_label"].add(f"{cid}: {raw_preds[pi]!r}")
        rows.append(pi)
        t.append(code[truth])
        p.append(L if pred is None else code[pred])
    if not t:
        summary = {k: v.count for k, v in problems.items() if v.count}
        raise EvalInputError(f"no clip of {predictions_uri} has both a prediction and a known label in "
                             f"{manifest_uri} (label set {list(labels)}); problems: {summary}")
    ta, pa_, ra = np.array(t), np.array(p), np.array(rows)

    prec, rec, f1, sup = precision_recall_fscore_support(ta, pa_, labels=np.arange(L), zero_division=0.0)
    mp, mr, mf, _ = precision_recall_fscore_support(ta, pa_, labels=np.unique(ta), average="macro",
                                                    zero_division=0.0)
    cm = confusion_matrix(ta, pa_, labels=np.arange(L + 1))[:L]
    keep_invalid = bool(cm[:, L].sum())
    n = len(ta)
    per_class = [ClassMetrics(
        labels[j], int(sup[j]), float(sup[j] / n), int(cm[:, j].sum()), float(cm[:, j].sum() / n),
        float(prec[j]) if cm[:, j].sum() else None,
        float(rec[j]) if sup[j] else None,
        float(f1[j]) if sup[j] else None) for j in range(L)]

    debias_rows: list[MethodScores] = []
    note = f"predictions carry no {col.LABEL_NAMES}/{col.PROBS_RAW}: no debiasing comparison"
    has_dists = col.PROBS_RAW in names and table.column(col.PROBS_RAW).null_count < len(table)
    if has_dists and col.LABEL_NAMES in names:
        firsts = np.array(sorted(pred_first.values()))
        dists = _distributions([ids[i] for i in firsts],
                               table.column(col.LABEL_NAMES).take(firsts).to_pylist(),
                               table.column(col.PROBS_RAW).take(firsts).to_pylist(),
                               labels, problems["bad_distribution"])
        ok = ~np.isnan(dists).any(axis=1)
        local = np.searchsorted(firsts, ra)  # evaluated rows in the deduplicated order
        if ok[local].any():
            tau = float(getattr(getattr(cfg, "labeler", None), "tau", 1.0))
            debias_rows = _compare(np.nan_to_num(dists), ok, local, ta, pa_, labels, prior, source,
                                   _content_free_vector(content_free, labels), tau)
            note = (f"{int(ok[local].sum())} of {n} scored clips have {col.PROBS_RAW}; batch calibration "
                    f"uses all {int(ok.sum())} predictions; logit adjustment "
                    + (f"uses {source} as its prior (tau {tau:g})" if prior is not None else f"skipped: {source}"))
    return EvalResult(
        predictions_uri, manifest_uri, list(labels), n, float(mr), float(accuracy_score(ta, pa_)),
        float(mp), float(mr), float(mf),
        _bootstrap(ta, pa_, L, bootstrap, seed, ci_level) if bootstrap > 0 else {},
        ci_level, bootstrap, seed, per_class,
        cm[:, : L + keep_invalid].tolist(), list(labels) + ([INVALID] if keep_invalid else []),
        _sink(ta, pa_, labels), debias_rows, note, problems)
