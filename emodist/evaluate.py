"""Score emotion predictions against a manifest's reference labels.

UAR (mean per-class recall), WAR (accuracy), macro P/R/F1, per-class numbers, the
confusion matrix, the "neutral sink", bootstrap intervals, and - when predictions
carry the model's raw distributions - the same metrics after each post-hoc debiasing
method. Bad rows are counted in `problems`, never dropped silently.

This module reads the predictions and pairs them with the manifest's clips; the numbers
come from eval_metrics.py and eval_debias.py, the result types from eval_result.py.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
from sklearn.metrics import accuracy_score

from emodist import eval_debias, eval_metrics
from emodist import schema as col
from emodist import storage
from emodist.eval_result import INVALID, EvalInputError, EvalResult, Problem
from emodist.io.source import read_manifest
from emodist.io.rows import clip_id_for
from emodist.labels import match_label, resolve_label_set

PRED_COLUMNS = (col.LABEL, "pred", "prediction")


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


def read_predictions(uri: str, cfg, bad: list[str] | None = None, config_hash: str | None = None,
                     ) -> tuple[pa.Table, list[str]]:
    """Prediction rows of one config, and the clip ids of its failure rows (for a run
    folder); lines of a CSV file that do not parse are added to `bad`. Rows of two configs
    (run --new-config) are refused unless `config_hash` picks one (output/folder.py)."""
    from emodist.output.folder import PREDICTIONS, ConfigChoice, RunFolder, choose_config, hash_counts

    fs, path = storage.filesystem(uri, cfg)
    try:
        if not fs.isdir(path):
            if not fs.exists(path):
                raise EvalInputError(f"{uri}: not found; pass an `emodist run` output folder or a file")
            table = _read_file(uri, cfg, bad)
            chosen = choose_config(uri, hash_counts(table), config_hash)
            if chosen is not None:
                import pyarrow.compute as pc

                table = table.filter(pc.equal(table.column(col.CONFIG_HASH), chosen))
            return table, []
        folder = RunFolder(uri, cfg)
        if not folder.prediction_parts():
            raise EvalInputError(f"{uri}: no {PREDICTIONS}/*.parquet inside; pass an `emodist run` output folder")
        table, chosen = folder.read(config_hash=config_hash)
        return table, folder.failed_ids(chosen)
    except ConfigChoice as exc:
        raise EvalInputError(str(exc)) from None


def _dedup(ids: list[str], problem: Problem) -> dict[str, int]:
    """First row index per id; every later repeat is counted."""
    first: dict[str, int] = {}
    for i, cid in enumerate(ids):
        if cid in first:
            problem.add(cid)
        else:
            first[cid] = i
    return first


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
    table, failed = read_predictions(predictions_uri, cfg, bad_pred_lines, config_hash)
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
    prior, source = eval_debias.training_prior(prior_from, manifest_uri, cfg, labels)  # a bad --prior-from fails here
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

    classes = eval_metrics.class_table(ta, pa_, labels)
    debias_rows, note = eval_debias.comparison(table, ids, pred_first, ra, ta, pa_, labels,
                                               problems["bad_distribution"], prior, source, content_free, cfg)
    return EvalResult(
        predictions_uri, manifest_uri, list(labels), len(ta), classes.macro_recall,
        float(accuracy_score(ta, pa_)), classes.macro_precision, classes.macro_recall, classes.macro_f1,
        eval_metrics.bootstrap(ta, pa_, L, bootstrap, seed, ci_level) if bootstrap > 0 else {},
        ci_level, bootstrap, seed, classes.per_class, classes.confusion, classes.cols,
        eval_metrics.sink(ta, pa_, labels), debias_rows, note, problems)
