"""The ``medclf`` command line: parses, validates, calls one function per command, prints.

A :class:`~medclf.errors.MedclfError` is printed as one paragraph on stderr with exit code 2, and so is a full
disk or a permission error (:func:`medclf.atomic.storage_error`); any other exception is a bug and keeps its
traceback. Every command that writes a run or sweep folder holds its lock (:mod:`medclf.locking`) throughout.
"""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from medclf import __version__
from medclf.atomic import storage_error
from medclf.cli._tables import Column, print_fitted, under_common_folder
from medclf.errors import MedclfError
from medclf.locking import hold_run_folder

__all__ = ["app", "main"]

app = typer.Typer(
    name="medclf",
    help="Turn a folder of labelled medical images into a rigorous, reproducible classification study.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

DEMO_CONFIG = "demo.yaml"


def _friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print a MedclfError (or a full disk / permission error) as one paragraph on stderr and exit 2.

    Every other error is let through with its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MedclfError as error:
            _print_error(error)
        except OSError as error:  # a write that does not go through medclf.atomic (a folder, a library's file)
            friendly = storage_error(error, action="access")
            if friendly is None:
                raise
            _print_error(friendly)
        raise typer.Exit(code=2)

    return wrapper


def _print_error(error: Exception) -> None:
    # escaped: a path or value in the message may contain [brackets] that rich would read as markup
    err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)


def _command_line() -> str:
    """This process's command line, as a lock holder describes itself to a refused writer."""
    line = " ".join(["medclf", *sys.argv[1:]])
    return line if len(line) <= 200 else line[:197] + "..."


def _version(value: bool) -> None:
    if value:
        console.print(f"medclf {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Turn a folder of labelled medical images into a rigorous, reproducible classification study."""
    _log_to_console()  # every command (here rather than in main(), so in-process calls print the same lines)


# ---------------------------------------------------------------------------------------------- helpers
def _progress(quiet: bool) -> Progress | None:
    if quiet:
        return None
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _fmt(stats: dict[str, Any] | float | None) -> str:
    if isinstance(stats, dict):
        if stats.get("mean") is None:
            return "n/a"
        if stats.get("std") is None:  # a single fold: no spread to report
            return f"{stats['mean']:.3f}"
        return f"{stats['mean']:.3f} ± {stats['std']:.3f}"
    return "n/a" if stats is None else f"{stats:.3f}"


def _folds_title(summary: dict[str, Any]) -> str:
    """"2 fold(s)", or "folds 0, 3 of 10" when the summary covers only some of the study's folds."""
    folds = summary.get("folds") or {}
    ran, n_folds = folds.get("run"), folds.get("n_folds")
    if ran is not None and n_folds is not None and list(ran) != list(range(n_folds)):
        return f"folds {', '.join(map(str, ran))} of {n_folds}"
    return f"{len(summary['best_epochs'])} fold(s)"


def print_summary(summary: dict[str, Any], out: Path) -> None:
    """The headline metrics of a study: mean ± std across folds per split, and the fold ensemble.

    Printed as :mod:`medclf.cli._tables` fits it to the terminal: the ensemble's columns continue in a second
    table with the metric names when all the splits do not fit beside each other.
    """
    from medclf.evaluation import SUMMARY_METRICS
    from medclf.evaluation.multilabel import MULTILABEL_SUMMARY

    splits, ensemble = list(summary["metrics"]), list(summary["ensemble"])
    rows = []
    for name in MULTILABEL_SUMMARY if summary.get("task") == "multilabel" else SUMMARY_METRICS:
        rows.append([name, *[_fmt(summary["metrics"][s].get(name)) for s in splits],
                     *[_fmt(summary["ensemble"][s].get(name)) for s in ensemble]])
    for level in ("patient", "study"):  # unit-level rows, when the data has patient or study ids
        if all(level in summary["metrics"][s] for s in splits) and splits:
            for name in ("accuracy", "f1_macro", "auc_macro"):
                rows.append([f"{level} {name}", *[_fmt(summary["metrics"][s][level].get(name)) for s in splits],
                             *[""] * len(ensemble)])
    values = [Column(s) for s in splits] + [Column(f"ensemble {s}") for s in ensemble]
    print_fitted(console, f"{summary['name']}: {_folds_title(summary)}, mean ± std", [Column("metric", "left")],
                 values, rows)
    positive = summary.get("data", {}).get("positive_class")
    if positive is not None:  # binary metrics, curves and thresholds all read this class as the positive one
        console.print(f"positive class: {positive}", highlight=False)
    console.print(f"wall time {summary['timing']['total_s']:.0f} s; results in {out}", highlight=False)


def _run(config: Any, out: Path, *, overwrite: bool, quiet: bool, executor: Any = None) -> None:
    from medclf.api import run_study
    from medclf.training.distributed import is_writer

    if not is_writer():  # a torchrun rank but 0 trains its share of each fold; rank 0 locks, prints and reports
        run_study(config, out, overwrite=overwrite)
        return
    progress = _progress(quiet)  # --quiet: no bars; the log lines (fold results, warnings) are still printed
    # locked before run_study reads (or, with --overwrite, deletes) anything in the folder, until the report is out
    with hold_run_folder(out, command=_command_line()):
        with progress if progress is not None else nullcontext():
            summary = run_study(config, out, overwrite=overwrite, progress=progress, executor=executor)  # + report
        print_summary(summary, out)
        console.print(f"report {out / 'report.html'}", highlight=False)


def _log_to_console() -> None:
    """Print the ``medclf`` loggers' records (INFO and up) on ``console``, one plain line each.

    The progress bars draw on the same console, so a line printed while they run goes above them.
    """
    from rich.highlighter import NullHighlighter
    from rich.logging import RichHandler

    class LineHandler(RichHandler):
        def render(self, *, record: logging.LogRecord, traceback: Any, message_renderable: Any) -> Any:
            return message_renderable  # the message alone: no time, level or path columns padding it to the width

    global _LOG_HANDLER
    logger = logging.getLogger("medclf")
    if _LOG_HANDLER is None:
        _LOG_HANDLER = LineHandler(console=console, markup=False, highlighter=NullHighlighter(), keywords=[])
        logger.addHandler(_LOG_HANDLER)
    logger.setLevel(logging.INFO)


_LOG_HANDLER: logging.Handler | None = None  # installed once per process, by the first command


def _report(folder: Path) -> None:
    """Write the HTML report of a run folder (or the comparison of a sweep folder) and say where it is."""
    from medclf.reporting import write_comparison_html, write_report

    folder = Path(folder)
    is_sweep = (folder / "comparison.json").exists() and not (folder / "summary.json").exists()
    path = write_comparison_html(folder) if is_sweep else write_report(folder)
    console.print(f"report {path}", highlight=False)


OverridesOpt = Annotated[
    list[str] | None,
    typer.Option("--override", "-o", help="Set a config key: dotted.key=value (repeatable)."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars (for CI logs).")]
RunDirArg = Annotated[Path, typer.Argument(help="A run folder written by medclf run.")]
InputsArg = Annotated[list[str], typer.Argument(help="Image files, folders or CSV files of paths.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace a run of a different config in --out.")]


# --------------------------------------------------------------------------------------------- commands
# `run` lives in cli/run.py; imported here, before the other commands, so it stays the first one --help lists
from medclf.cli import run  # noqa: E402,F401


@app.command(epilog="Example: medclf validate examples/pneumoniamnist.yaml -o model.name=resnet18")
@_friendly_errors
def validate(
    config: Annotated[Path, typer.Argument(help="The study's YAML config.")],
    override: OverridesOpt = None,
) -> None:
    """Print the resolved config (every default written out), or what is wrong with it.

    A sweep file (a config with a ``sweep:`` section) is validated variant by variant; its variants are listed.
    """
    from medclf.config import dump_config
    from medclf.config.loading import read_yaml
    from medclf.experiments.validation import load_checked_config

    raw = read_yaml(config)
    if isinstance(raw, dict) and "sweep" in raw:
        from medclf.errors import ConfigError
        from medclf.experiments.sweep_config import load_sweep

        if override:
            raise ConfigError(f"{config} is a sweep file: change its variants in the file, not with --override.")
        plan = load_sweep(config)
        console.print(f"{config}: a valid sweep of {len(plan.variants)} variant(s), baseline {plan.baseline}, "
                      f"search {plan.sweep.search}", highlight=False, markup=False)
        for v in plan.variants:
            console.print(f"  {v.name}: {v.overrides or '(the base config)'}", highlight=False, markup=False)
        if plan.sweep.search != "grid":
            console.print(f"  then {plan.sweep.trials} trials sampled from {', '.join(plan.sweep.space)}",
                          highlight=False, markup=False)
        return
    console.print(dump_config(load_checked_config(config, override or [])), highlight=False, markup=False, end="")


@app.command(epilog="Example: medclf demo --out runs/demo")
@_friendly_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Run folder.")] = Path("runs/demo"),
    override: OverridesOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run the embedded demo: 5-fold CV of a small CNN on synthetic MRI-like head phantoms."""
    from medclf.experiments.validation import load_checked_config

    resource = files("medclf") / "resources" / DEMO_CONFIG
    cfg = load_checked_config(Path(str(resource)), override or [])
    _run(cfg, out, overwrite=overwrite, quiet=quiet)


@app.command(epilog="Example: medclf report runs/demo")
@_friendly_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by medclf run (or a sweep folder).")],
) -> None:
    """Write RUN_DIR/report.html (figures/ and tables/ beside it) from the run folder alone."""
    with hold_run_folder(run_dir, command=_command_line(), create=False):
        _report(run_dir)


def _print_image_rows(rows: list[dict[str, Any]], what: str, *, lead: tuple[str, ...] = ()) -> None:
    """The first 20 of ``rows`` (one per image, ``path`` first) as fitted tables: paths relative to the folder
    they share (named in the title), the ``lead`` columns next to them, numbers right-aligned."""
    shown = rows[:20]
    folder, paths = under_common_folder([str(row["path"]) for row in shown])
    title = f"{len(rows)} image(s)" + (f" in {folder}" if folder else "") + what
    title += f"; the first {len(shown)}" if len(shown) < len(rows) else ""
    columns = [*lead, *[c for c in rows[0] if c != "path" and c not in lead]]
    cells = [[path, *[f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in columns]]
             for path, row in zip(paths, shown)]
    values = [Column(c, "right" if isinstance(rows[0][c], int | float) else "left") for c in columns]
    print_fitted(console, title, [Column("path", "left")], values, cells)


@app.command(epilog="Example: medclf predict runs/demo new_scans/ --out predictions.csv")
@_friendly_errors
def predict(
    run_dir: RunDirArg,
    inputs: InputsArg,
    out: Annotated[Path, typer.Option("--out", help="CSV of probabilities and predictions.")] = Path(
        "predictions.csv"
    ),
    fold: Annotated[int | None, typer.Option("--fold", help="Use one fold's model, not the ensemble.")] = None,
    engine: Annotated[str, typer.Option("--engine", help="torch (the fold models), onnx (onnxruntime on the "
                                        "model `medclf export` wrote), or auto: onnx when RUN_DIR/export holds an "
                                        "export of the run's current fold weights (faster), else torch.")] = "auto",
    model: Annotated[Path | None, typer.Option("--model", help="With --engine onnx: model.onnx or its folder "
                                               "[default: RUN_DIR/export].")] = None,
    precision: Annotated[str, typer.Option("--precision", help="fp32, or bf16 autocast with the torch engine on a "
                                           "CUDA device or a CPU with bf16 instructions: faster for plain "
                                           "convolutions, with probabilities a little off the run's own fp32 "
                                           "scoring.")] = "fp32",
    quiet: QuietOpt = False,
) -> None:
    """Predict new images with a run's fold ensemble (or one fold) and write a CSV; per patient and study too
    when a CSV input has patient_id / study_id columns."""
    from medclf.inference import predict_inputs

    result = predict_inputs(run_dir, inputs, fold=fold, out=out, engine=engine, model=model,
                            precision=precision)  # predict_inputs checks the value
    if not quiet:
        _print_image_rows(result.rows, "", lead=("predicted",))
    console.print(f"wrote {', '.join(map(str, result.written))} ({result.engine} engine)", highlight=False)


def print_comparison(comparison: dict[str, Any], out: Path) -> None:
    """The sweep's ranking: the chosen metric with its 95 % interval, and each variant's test against the baseline."""
    metric, split = comparison["metric"], comparison["split"]
    rows = []
    for v in comparison["variants"]:
        m, vs = v["metrics"][metric], v["vs_baseline"] or {}
        ci = "n/a" if m["ci_low"] is None else f"{m['ci_low']:.3f}-{m['ci_high']:.3f}"
        diff = vs.get("diff_mean")
        rows.append([str(v["rank"]), v["name"], _fmt(m), ci, "" if diff is None else f"{diff:+.3f}",
                     _fmt(vs.get("p_corrected_t")) if vs else "", _fmt(vs.get("p_wilcoxon")) if vs else "",
                     f"{v['train_time_s']:.0f}"])
    values = [Column(c) for c in ("mean ± std", "95 % CI", "Δ", "p (t)", "p (Wilcoxon)", "train s")]
    print_fitted(console, f"{metric} on {split}, {comparison['n_folds']} folds per variant; baseline "
                 f"{comparison['baseline']}", [Column("rank"), Column("variant", "left")], values, rows)
    for v in comparison["variants"]:
        if v["vs_baseline"]:
            console.print(f"{v['name']}: {v['vs_baseline']['verdict']}", highlight=False)
    console.print(f"comparison in {out}/comparison.md", highlight=False)


@app.command(epilog="Example: medclf sweep examples/sweeps/losses.yaml --out runs/losses --parallel 2")
@_friendly_errors
def sweep(
    config: Annotated[Path, typer.Argument(help="A sweep file: a study config plus a sweep: section.")],
    out: Annotated[Path | None, typer.Option("--out", help="Sweep folder (default: runs/sweep-<name>).")] = None,
    parallel: Annotated[int, typer.Option("--parallel", help="Folds at once (local: in worker processes).")] = 1,
    executor: Annotated[str, typer.Option("--executor", help="local or ray.")] = "local",
    address: Annotated[
        str | None, typer.Option("--address", help="Ray cluster to join (with --executor ray).")
    ] = None,
) -> None:
    """Run (or resume) every variant of a sweep on the same folds, then rank and test them against the baseline."""
    from medclf.errors import ConfigError
    from medclf.experiments.sweep import run_sweep
    from medclf.experiments.sweep_config import load_sweep

    if executor not in ("local", "ray"):
        raise ConfigError(f"--executor must be local or ray, got {executor!r}.")
    if address and executor != "ray":
        raise ConfigError("--address joins a Ray cluster; give it with --executor ray.")
    # a Ray cluster's workers train (and check training.device there); this head may have no GPU
    plan = load_sweep(config, check_device=address is None)
    folder = out or Path("runs") / f"sweep-{plan.base.get('name', 'study')}"
    with hold_run_folder(folder, command=_command_line()):  # one lock for the sweep folder and every variant in it
        comparison = run_sweep(plan, folder, executor=executor, parallel=parallel, address=address)
        print_comparison(comparison, folder)
        _report(folder)


@app.command("show-batch", epilog="Example: medclf show-batch examples/demo.yaml --out batch.png")
@_friendly_errors
def show_batch(
    config: Annotated[Path, typer.Argument(help="The study's YAML config.")],
    out: Annotated[Path, typer.Option("--out", help="PNG to write.")] = Path("batch.png"),
    override: OverridesOpt = None,
    n_images: Annotated[int | None, typer.Option("--n", help="Images to draw (default: batch size, <= 64).")] = None,
) -> None:
    """Draw one augmented training batch (fold 0, with oversampling) as a labelled grid PNG."""
    from medclf.atomic import atomic_write_bytes
    from medclf.experiments.preview import augmented_batch
    from medclf.experiments.validation import load_checked_config
    from medclf.reporting.figures import image_grid_figure

    cfg = load_checked_config(config, override or [])
    images, names, copies = augmented_batch(cfg, n_images=n_images)
    titles = [f"{name} (copy)" if copy else name for name, copy in zip(names, copies)]
    figure = image_grid_figure("batch", images, titles=titles, ncols=8)
    atomic_write_bytes(out, figure.png)  # the print-resolution PNG
    console.print(f"wrote {out}: {len(images)} augmented training images", highlight=False)


def _study_config(target: Path, overrides: list[str]) -> Any:
    """A YAML config as given, or a data path turned into a study config with every default."""
    from medclf.config import apply_overrides
    from medclf.data.inspect import guess_source
    from medclf.experiments.validation import load_checked_config, parse_checked_config

    if target.suffix.lower() in (".yaml", ".yml"):
        return load_checked_config(target, overrides)
    raw = apply_overrides({"data": {"source": guess_source(target)}}, overrides)
    return parse_checked_config(raw, origin=str(target))


@app.command(epilog="Example: medclf inspect data/chest_xray --out inspect/")
@_friendly_errors
def inspect(
    target: Annotated[Path, typer.Argument(help="A data folder, .npz, .csv, or a study's YAML config.")],
    override: OverridesOpt = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for inspect.json and sample grids.")] = Path("inspect"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report instead of text.")] = False,
) -> None:
    """Describe a dataset: counts per split, class and fold, patients, image sizes, unreadable files."""
    import json

    from medclf.data.inspect import inspect_dataset, report_lines, unreadable_summary

    report = inspect_dataset(_study_config(target, override or []).data, out=out)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    for line in report_lines(report):
        console.print(line, highlight=False, markup=False)
    if (unreadable := unreadable_summary(report)) is not None:  # soft-wrapped: each named file stays whole
        console.print(f"  {unreadable}", highlight=False, markup=False, soft_wrap=True)
    console.print(f"wrote {out / 'inspect.json'} and {len(report['samples'])} sample grids", highlight=False)


@app.command(epilog="Example: medclf audit data/chest_xray --json > audit.json")
@_friendly_errors
def audit(
    target: Annotated[Path, typer.Argument(help="A data folder, .npz, .csv, or a study's YAML config.")],
    override: OverridesOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report instead of text.")] = False,
) -> None:
    """Look for leakage: exact and near duplicate images and patients shared between splits and folds."""
    import json

    from medclf.data import load_dataset
    from medclf.data.audit import audit_dataset, leak_remedies
    from medclf.data.splitting import make_folds, resplit_data
    from medclf.errors import DataError

    cfg = _study_config(target, override or [])
    data = resplit_data(load_dataset(cfg.data), cfg.cv, seed=cfg.seed)  # the splits the study would use
    try:
        folds = make_folds(data, cfg.cv, seed=cfg.seed)
    except DataError as error:  # too little data for cv: the data's own splits are still audited
        folds = None
        err_console.print(f"folds not audited (cv cannot make them: {error}); audited the data's splits only",
                          highlight=False, soft_wrap=True)  # stderr: --json keeps stdout one JSON object
    report = audit_dataset(data, folds, near_distance=cfg.audit.near_distance,
                           near_correlation=cfg.audit.near_correlation, near=cfg.audit.near_duplicates).report
    if as_json:
        print(json.dumps(report))
        return
    where = ", ".join(f"{name} {n}" for name, n in report["locations"].items())
    console.print(f"{report['n_images']} images ({where}; {report['timing_s']:.1f} s)", highlight=False)
    exact, near = report["exact_duplicates"], report["near_duplicates"]
    console.print(f"exact duplicates: {exact['count']} ({exact['within']} within a split, {exact['across']} across "
                  f"splits) in {len(exact['groups'])} groups", highlight=False)
    for group in exact["groups"][:5]:
        console.print(f"  {' = '.join(group)}", highlight=False)
    console.print(f"near-duplicate pairs: {near['count']} ({near['within']} within a split, {near['across']} across "
                  f"splits) among {near['n_images']} images", highlight=False)
    for pair in near["pairs"][:5]:  # each pair passes the test itself; pairs are never chained into groups
        console.print(f"  {pair['ids'][0]} ~ {pair['ids'][1]} ({pair['splits'][0]}, {pair['splits'][1]}; "
                      f"distance {pair['distance']}, correlation {pair['correlation']})", highlight=False)
    overlap = report["patient_overlap"]
    where = ", ".join(f"{pair} {n}" for pair, n in overlap["pairs"].items())  # "train|test 3": plain, not a dict
    console.print(f"patients in several splits: {overlap['count']}" + (f" ({where})" if where else ""),
                  highlight=False)
    for fold in report.get("folds", []):
        console.print(f"fold {fold['fold']}: evaluation images duplicating training: {fold['exact']} exact, "
                      f"{fold['near']} near; of training patients: {fold['patient']}", highlight=False)
    folds = report.get("folds", [])
    kinds = {kind for kind, found in (
        ("exact", exact["across"] or any(f["exact"] for f in folds)),
        ("near", near["across"] or any(f["near"] for f in folds)),
        ("patient", overlap["count"] or any(f["patient"] for f in folds)),
    ) if found}
    if kinds:  # the same remedies a run's leak warning names
        console.print("to fix: " + "; ".join(leak_remedies(data, report, kinds)), highlight=False, soft_wrap=True)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """A warning raised by medclf is one line on stderr (no source file and line: they are for bugs)."""
    err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


# Commands that live in their own modules (medclf/cli/<command>.py) register on `app` when imported; they
# import `app` and the helpers above from this module, which is why the import sits at the end.
from medclf.cli import explain, export, lr_find, serve  # noqa: E402,F401


def main() -> None:
    """Console-script entry point."""
    warnings.showwarning = _show_warning
    app()
