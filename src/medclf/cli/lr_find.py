"""`medclf lr-find`: a thin typer command (parse, call, print) registered on :data:`medclf.cli.app`."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer

from medclf.cli import OverridesOpt, QuietOpt, _friendly_errors, _progress, _study_config, app, console


@app.command("lr-find", epilog="Example: medclf lr-find examples/pneumoniamnist.yaml --out lr_find/pneumonia")
@_friendly_errors
def lr_find(
    config: Annotated[Path, typer.Argument(help="The study's YAML config (or a data folder, with every default).")],
    override: OverridesOpt = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for lr_find.csv and lr_find.png.")] = Path("lr_find"),
    start: Annotated[float, typer.Option("--start", help="First learning rate of the sweep.")] = 1e-7,
    end: Annotated[float, typer.Option("--end", help="Last learning rate of the sweep.")] = 10.0,
    steps: Annotated[int, typer.Option("--steps", help="Mini-batches at most (stops early on divergence).")] = 100,
    quiet: QuietOpt = False,
) -> None:
    """The learning-rate range test on fold 0's training split: suggests training.optimizer.lr.

    The lr grows exponentially from --start to --end, one mini-batch per step, with the config's model, loss,
    augmentation, optimizer (head_lr keeps its ratio to lr) and runtime; no run folder is touched.
    """
    from medclf.atomic import atomic_write_bytes
    from medclf.experiments.lr_find import LR_FIND_PNG, find_learning_rate, write_lr_find_csv

    cfg = _study_config(config, override or [])
    progress = _progress(quiet)
    with progress if progress is not None else nullcontext():
        task = progress.add_task("lr-find", total=steps) if progress is not None else None
        result = find_learning_rate(cfg, start=start, end=end, n_steps=steps,
                                    on_step=None if progress is None else lambda *_: progress.advance(task))
    csv_path = write_lr_find_csv(result, out)
    png_path = out / LR_FIND_PNG
    atomic_write_bytes(png_path, _figure(result, _swept_optimizer(cfg).name).png)
    _print_result(result, cfg)
    console.print(f"wrote {csv_path} and {png_path}", highlight=False)


def _print_result(result: Any, cfg: Any) -> None:
    ran = len(result.lrs)
    if result.stopped == "diverged":
        console.print(f"stopped after {ran} of {result.n_steps} steps: the smoothed loss passed 4x its lowest at "
                      f"lr {result.lrs[-1]:.2e}", highlight=False, soft_wrap=True)
    elif result.stopped == "non-finite":
        console.print(f"stopped at step {ran + 1} of {result.n_steps}: the loss was not finite (not recorded)",
                      highlight=False)
    for name, value, what in (("steepest", result.steepest, "steepest descent of the smoothed loss"),
                              ("valley", result.valley, "middle of the longest valley, as fastai's valley")):
        shown = "n/a (too few steps recorded)" if value is None else f"{value:.2e}"
        console.print(f"suggested lr ({name}): {shown}  [{what}]", highlight=False, markup=False, soft_wrap=True)
    staged, optimizer = bool(cfg.training.stages), _swept_optimizer(cfg)
    if optimizer.head_lr is not None:
        console.print(f"the head's lr scales with it (head_lr/lr = {optimizer.head_lr / optimizer.lr:g})",
                      highlight=False)
    if result.valley is not None:
        hint = (f"try {result.valley:.1e} as the first stage's optimizer.lr" if staged
                else f"try: -o training.optimizer.lr={result.valley:.1e}")
        console.print(hint, highlight=False, markup=False)


def _swept_optimizer(cfg: Any) -> Any:
    """The optimizer the test trains with: the first stage's in a staged config (it trains as that stage does)."""
    return cfg.training.stages[0].optimizer if cfg.training.stages else cfg.training.optimizer


def _figure(result: Any, optimizer_name: str) -> Any:
    """The loss (raw, faint) and smoothed loss against log lr, each suggestion marked by a line and a dot."""
    import numpy as np

    from medclf.reporting.figures import NEUTRAL, Panel, Series, line_figure

    series = [Series(result.lrs, result.losses, label="loss", color=NEUTRAL, width=0.8, alpha=0.35),
              Series(result.lrs, result.smoothed, label="smoothed loss", color="#2458a6")]
    vlines = []
    for name, value, colour in (("steepest", result.steepest, "#d95f02"), ("valley", result.valley, "#1b9e77")):
        if value is not None:
            at = float(np.interp(np.log(value), np.log(result.lrs), result.smoothed))
            series.append(Series([value], [at], color=colour, style="", marker="o"))
            vlines.append((value, f"{name} {value:.1e}", colour, "--"))
    ylim = None
    if result.smoothed:  # the divergence spike would flatten the part of the curve that matters
        low, first = min(*result.losses, *result.smoothed), result.smoothed[0]
        ylim = (low - 0.05 * (first - low) - 1e-3, first + 0.3 * (first - low) + 1e-3)
    panel = Panel(title=f"learning-rate range test ({optimizer_name})", xlabel="learning rate (optimizer.lr)",
                  ylabel="training loss", series=series, vlines=vlines, xlim=(result.start, result.end), ylim=ylim,
                  log_x=True)
    return line_figure("lr_find", [panel], panel_size=4.2)
