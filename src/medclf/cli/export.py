"""`medclf export`: a thin typer command (parse, call, print) registered on :data:`medclf.cli.app`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medclf.cli import RunDirArg, _command_line, _friendly_errors, app, console
from medclf.errors import ConfigError
from medclf.locking import hold_run_folder

FORMATS = ("onnx",)


@app.command(epilog="Example: medclf export runs/demo --format onnx")
@_friendly_errors
def export(
    run_dir: RunDirArg,
    format: Annotated[str, typer.Option("--format", help="The export format (onnx).")] = "onnx",
    fold: Annotated[int | None, typer.Option("--fold", help="Export one fold's model, not the ensemble.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for model.onnx and export.json "
                                             "[default: RUN_DIR/export].")] = None,
) -> None:
    """Export the run's fold ensemble (or one fold) as one ONNX graph, checked against torch on the run's test
    images: model.onnx (uint8 NCHW in, probabilities out, dynamic batch) and export.json (how to feed and read it)."""
    if format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}.")
    from medclf.inference import export_onnx

    # the export lands in the run folder by default, and the folds it reads must not change meanwhile
    with hold_run_folder(run_dir, command=_command_line(), create=False):
        result = export_onnx(run_dir, fold=fold, out=out)
    parity, sidecar = result.parity, result.sidecar
    folds = ", ".join(map(str, sidecar["folds"]))
    console.print(f"exported {'fold' if len(sidecar['folds']) == 1 else 'folds'} {folds} ({sidecar['ensemble']}) "
                  f"to {result.model_path}, ONNX opset {sidecar['opset']}", highlight=False)
    console.print(f"parity on {parity.images}: max |p_onnx - p_torch| = {parity.max_abs_diff:.2e} "
                  f"(tolerance {parity.tolerance:g}), predicted classes agree on {parity.agreement:.1%}",
                  highlight=False)
    console.print(f"wrote {result.model_path} and {result.sidecar_path}", highlight=False)
