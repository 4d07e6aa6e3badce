"""`medclf serve`: a thin typer command (parse, call, print) registered on :data:`medclf.cli.app`."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from medclf.cli import RunDirArg, _friendly_errors, app, console
from medclf.errors import ConfigError


@app.command(epilog="Example: medclf serve runs/demo --port 8000 --operating-point sensitivity_0.95")
@_friendly_errors
def serve(
    run_dir: RunDirArg,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: any free port).")] = 8000,
    fold: Annotated[int | None, typer.Option("--fold", help="Serve one fold's model, not the ensemble.")] = None,
    operating_point: Annotated[
        str | None,
        typer.Option("--operating-point", help="Decision threshold: 0.5, youden, sensitivity_0.90 ... "
                                               "(default: youden when the run has it, else 0.5)."),
    ] = None,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", help="Largest accepted upload, MB.")] = 20.0,
) -> None:
    """Serve a run's model over HTTP: POST /predict, GET /health, and a page at / to drop an image on."""
    import torch
    import uvicorn

    from medclf.inference.serve import ServedModel, create_app

    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535 (0: any free port); got {port}")
    if not max_upload_mb > 0:
        raise ConfigError(f"--max-upload-mb must be a positive number of megabytes; got {max_upload_mb}")
    # one request's forward pass at a time (the model is shared under a lock): a few threads each is enough,
    # and leaves cores to the event loop and the decoders
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    served = ServedModel.load(run_dir, fold=fold, operating_point=operating_point)
    rule = ", ".join(f"{c} >= {t:.4g}" for c, t in served.thresholds.items()) or "the most probable class"
    console.print(f"serving {run_dir} ({len(served.loaded)} fold model(s), classes {', '.join(served.class_names)}; "
                  f"operating point {served.operating_point}: {rule})", highlight=False)
    uvicorn.run(create_app(served, max_upload_mb=max_upload_mb), host=host, port=port, log_level="info")
