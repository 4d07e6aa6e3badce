"""`medclf run`: a thin typer command (parse, call, print) registered on :data:`medclf.cli.app`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medclf.cli import OverridesOpt, OverwriteOpt, QuietOpt, _friendly_errors, _run, app


@app.command(epilog="Example: medclf run examples/demo.yaml -o training.epochs=3 --out runs/demo3")
@_friendly_errors
def run(
    config: Annotated[Path, typer.Argument(help="The study's YAML config.")],
    override: OverridesOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run folder (default: runs/<name>).")] = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    folds: Annotated[str | None, typer.Option(
        "--folds", help="Run only these folds, e.g. 0,3 (the same as -o cv.folds=[0,3]); a later run resumes.")] = None,
    executor: Annotated[str, typer.Option(
        "--executor", help="Where the folds run: local (this machine) or ray (Ray tasks).")] = "local",
    address: Annotated[str | None, typer.Option(
        "--address", help="Ray cluster to join (with --executor ray; default: a local Ray).")] = None,
    parallel: Annotated[int, typer.Option(
        "--parallel", help="Folds at once, each with cores/N threads (local: in worker processes).")] = 1,
    gpus_per_fold: Annotated[float, typer.Option(
        "--gpus-per-fold", help="GPUs each fold's Ray task asks for, 0 to 1 (with --executor ray).")] = 0.0,
) -> None:
    """Run (or resume) a cross-validated study and write its run folder."""
    import json

    from medclf.experiments.executors import study_executor
    from medclf.experiments.validation import load_checked_config

    # the options are checked before the config: a wrong one costs nothing
    runner = study_executor(executor, parallel=parallel, address=address, gpus_per_fold=gpus_per_fold)
    fold_override = [f"cv.folds={json.dumps(folds)}"] if folds is not None else []  # a YAML string: cv.folds parses it
    # a Ray cluster's workers train (and check training.device there); this head may have no GPU
    cfg = load_checked_config(config, [*(override or []), *fold_override], check_device=address is None)
    _run(cfg, out or Path("runs") / cfg.name, overwrite=overwrite, quiet=quiet, executor=runner)
