"""`medclf explain`: a thin typer command (parse, call, print) registered on :data:`medclf.cli.app`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medclf.cli import InputsArg, QuietOpt, RunDirArg, _friendly_errors, _print_image_rows, app, console


@app.command(epilog="Example: medclf explain runs/demo scans/ --out explanations/")
@_friendly_errors
def explain(
    run_dir: RunDirArg,
    inputs: InputsArg,
    out: Annotated[Path, typer.Option("--out", help="Folder for the PNGs and explanations.csv (created).")] = Path(
        "explanations"
    ),
    fold: Annotated[int | None, typer.Option("--fold", help="Explain one fold's model, not the ensemble.")] = None,
    class_name: Annotated[str | None, typer.Option(
        "--class", help="The class to explain for every image (default: the class each image is predicted).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Grad-CAM of a run's predictions: one PNG per image (the image beside its overlay) and a CSV."""
    from medclf.inference import explain_images

    rows = explain_images(run_dir, inputs, out=out, fold=fold, class_name=class_name)
    if not quiet:
        # the explained class is the predicted one, or --class for every image: said once, in the title
        target = f"class {class_name}" if class_name else "the predicted class"
        shown = [{k: row[k] for k in ("path", "predicted", "probability", "png")} for row in rows]
        _print_image_rows(shown, f", Grad-CAM of {rows[0]['target_layer']} for {target}", lead=("predicted",))
    console.print(f"wrote {len(rows)} PNG(s) and explanations.csv to {out}", highlight=False)
