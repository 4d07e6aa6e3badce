"""Figures: a few plot primitives shared by the run report and the sweep comparison, rendered to PNG.

Every figure is drawn on a standalone :class:`matplotlib.figure.Figure` (the Agg canvas; no pyplot, so no
global figure list to leak and no GUI backend), rendered once at a print resolution for ``figures/*.png`` and
halved for the copy embedded in the page, then freed. The primitives take
plain data (:class:`Series` of x/y, bar values with intervals, matrices, images), so the run report and the
comparison describe *what* to plot and share *how*.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "EMBED_DPI",
    "SAVE_DPI",
    "SPLIT_COLORS",
    "Bars",
    "Figure",
    "Panel",
    "Series",
    "bar_figure",
    "heatmap_figure",
    "image_grid_figure",
    "line_figure",
    "palette",
    "sequential_colors",
    "split_color",
]

SAVE_DPI = 220  # figures/*.png: sharp in a printed thesis or a paper's supplement
EMBED_DPI = SAVE_DPI // 2  # the copy in report.html: the same drawing halved, a quarter of the bytes
_STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e3e3",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
}
NEUTRAL = "#555555"  # reference lines, ensembles, totals
# One colour per split in every figure (bars, calibration, training curves), whichever splits a run has.
SPLIT_COLORS = {"train": "#8c8c8c", "val": "#7b5ea7", "holdout": "#2458a6", "test": "#1b9e77", "ensemble": NEUTRAL}


def split_color(split: str) -> str:
    """The fixed colour of ``split`` (``train``, ``val``, ``holdout``, ``test``, ``ensemble``); grey otherwise."""
    return SPLIT_COLORS.get(split, NEUTRAL)


def palette(names: Sequence[str]) -> dict[str, str]:
    """One fixed colour per name (class, label or variant), in order: tab10, then tab20, then evenly spaced hues.

    The same list of names always gets the same colours, so a class has one colour in every figure.
    """
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    n = len(names)
    if n <= 10:
        colours = [colormaps["tab10"](i) for i in range(n)]
    elif n <= 20:
        colours = [colormaps["tab20"](i) for i in range(n)]
    else:
        colours = [colormaps["hsv"](i / n) for i in range(n)]
    return {name: to_hex(c) for name, c in zip(names, colours)}


def sequential_colors(n: int) -> list[str]:
    """``n`` colours along a dark-to-light ramp, for things that are neither classes nor splits (folds)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    return [to_hex(colormaps["viridis"](x)) for x in np.linspace(0.05, 0.8, max(n, 1))][:n]


@dataclass
class Figure:
    """A rendered figure: ``png`` saved as ``figures/<name>.png`` (:data:`SAVE_DPI`), ``preview`` embedded in the
    page (:data:`EMBED_DPI`; the same PNG when not given)."""

    name: str
    caption: str
    png: bytes
    alt: str = ""
    preview: bytes = b""

    def to_html(self) -> str:
        data = base64.b64encode(self.preview or self.png).decode("ascii")
        alt = html.escape(self.alt or self.caption)
        caption = f"<figcaption>{html.escape(self.caption)}</figcaption>" if self.caption else ""
        image = f'<img src="data:image/png;base64,{data}" alt="{alt}">'
        return f'<figure id="figure-{html.escape(self.name)}">{image}{caption}</figure>'

    def files(self) -> dict[str, bytes]:
        return {f"figures/{self.name}.png": self.png}


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure as MplFigure

    return MplFigure(figsize=(width, height), dpi=EMBED_DPI, layout="constrained")


def _render(fig, name: str, caption: str) -> Figure:
    """Draw once at SAVE_DPI; the embedded copy is that bitmap halved (a second draw would double the time)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(SAVE_DPI)
    canvas.draw()
    image = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3])  # opaque: the facecolor is white
    fig.clear()  # drop the artists now rather than when the garbage collector finds the cycle
    return Figure(name=name, caption=caption, png=_png(image, SAVE_DPI),
                  preview=_png(image.reduce(SAVE_DPI // EMBED_DPI), EMBED_DPI))


def _png(image, dpi: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", dpi=(dpi, dpi))
    return buffer.getvalue()


def _style():
    import matplotlib

    return matplotlib.rc_context(_STYLE)


# ------------------------------------------------------------------------------------------- line plots
@dataclass
class Series:
    """One line: ``label`` None keeps it out of the legend."""

    x: Sequence[float]
    y: Sequence[float]
    label: str | None = None
    color: str | None = None
    width: float = 1.5
    style: str = "-"
    alpha: float = 1.0
    marker: str | None = None


@dataclass
class Panel:
    """One set of axes of a :func:`line_figure`.

    ``vlines`` are ``(x, label, colour, style)`` markers (the kept epoch, an early stop); ``square`` fixes
    the aspect ratio (ROC curves); ``legend`` is a matplotlib location, ``"outside"`` (one row above the
    panels, for a legend that holds for every panel and must not cover a marker at the last epoch) or None.
    """

    title: str
    xlabel: str
    ylabel: str
    series: list[Series]
    vlines: list[tuple[float, str, str, str]] = field(default_factory=list)
    xlim: tuple[float, float] | None = None
    ylim: tuple[float, float] | None = None
    square: bool = False
    legend: str | None = "best"
    integer_x: bool = False
    log_x: bool = False  # learning rates (the lr finder)


def line_figure(
    name: str, panels: Sequence[Panel], *, caption: str = "", ncols: int | None = None, panel_size: float = 3.4
) -> Figure:
    """Panels of lines side by side (wrapping after ``ncols``), each with its own legend."""
    with _style():
        return _render(_draw_lines(panels, ncols=ncols, panel_size=panel_size), name, caption)


def _draw_lines(panels: Sequence[Panel], *, ncols: int | None, panel_size: float):
    """The matplotlib figure of :func:`line_figure`, not yet rendered."""
    from matplotlib.ticker import MaxNLocator

    ncols = min(ncols or len(panels), len(panels))
    nrows = -(-len(panels) // ncols)
    fig = _new_figure(panel_size * ncols * 1.1, panel_size * nrows * 0.85)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, panel in zip(axes, panels):
        for s in panel.series:
            ax.plot(
                s.x, s.y, s.style, label=s.label, color=s.color, linewidth=s.width, alpha=s.alpha,
                marker=s.marker, markersize=3.5,
            )
        for x, label, colour, style in panel.vlines:
            ax.axvline(x, color=colour, linestyle=style, linewidth=1.1, label=label)
        ax.set_title(panel.title)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        if panel.xlim:
            ax.set_xlim(*panel.xlim)
        if panel.ylim:
            ax.set_ylim(*panel.ylim)
        if panel.square:
            ax.set_aspect("equal")
        if panel.integer_x:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if panel.log_x:
            ax.set_xscale("log")
        handles, labels = ax.get_legend_handles_labels()
        if panel.legend == "outside" and handles:
            fig.legend(handles, labels, loc="outside upper center", ncols=min(len(handles), 5), frameon=False)
        elif panel.legend and handles:
            ax.legend(loc=panel.legend, frameon=False)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return fig


# ------------------------------------------------------------------------------------------------- bars
@dataclass
class Bars:
    """One series of a :func:`bar_figure`: a value per category, optionally with an interval and colours."""

    label: str | None
    values: Sequence[float | None]
    low: Sequence[float | None] | None = None
    high: Sequence[float | None] | None = None
    color: str | Sequence[str] | None = None


def bar_figure(
    name: str,
    categories: Sequence[str],
    bars: Sequence[Bars],
    *,
    title: str = "",
    ylabel: str = "",
    caption: str = "",
    horizontal: bool = False,
    ylim: tuple[float, float] | None = None,
    annotate: bool = True,
) -> Figure:
    """Grouped bars with error bars from ``low``/``high`` (an undefined value draws nothing)."""
    n_cat, n_series = len(categories), max(len(bars), 1)
    width = 0.8 / n_series
    with _style():
        long_side = max(4.0, min(8.5, 0.45 * n_cat * n_series + 1.5))
        fig = _new_figure(6.4, long_side * 0.6) if horizontal else _new_figure(long_side, 3.4)
        ax = fig.subplots()
        positions = np.arange(n_cat, dtype=float)
        for k, series in enumerate(bars):
            values = np.array([np.nan if v is None else v for v in series.values], dtype=float)
            offset = positions + (k - (n_series - 1) / 2) * width
            err = None
            if series.low is not None and series.high is not None:
                low = np.array([np.nan if v is None else v for v in series.low], dtype=float)
                high = np.array([np.nan if v is None else v for v in series.high], dtype=float)
                err = np.nan_to_num(np.vstack([values - low, high - values]), nan=0.0).clip(min=0)
            draw = ax.barh if horizontal else ax.bar
            kwargs = {"xerr" if horizontal else "yerr": err}
            drawn = draw(offset, np.nan_to_num(values), width * 0.92, label=series.label, color=series.color,
                         capsize=3, error_kw={"elinewidth": 1, "ecolor": "#333333"}, **kwargs)
            if annotate:
                labels = ["" if np.isnan(v) else f"{v:.3f}" for v in values]
                ax.bar_label(drawn, labels=labels, padding=2, fontsize=6.5, color="#333333")
        if horizontal:
            ax.set_yticks(positions, categories)
            ax.invert_yaxis()
            ax.set_xlabel(ylabel)
            if ylim:
                ax.set_xlim(*ylim)
            ax.grid(axis="y", visible=False)
        else:
            ax.set_xticks(positions, categories, rotation=30 if n_cat > 4 else 0, ha="right" if n_cat > 4 else "center")
            ax.set_ylabel(ylabel)
            if ylim:
                ax.set_ylim(*ylim)
            ax.grid(axis="x", visible=False)
        if title:
            ax.set_title(title)
        if any(b.label for b in bars):  # above the axes, so it never hides a bar
            fig.legend(frameon=False, loc="outside upper center", ncols=min(len(bars), 5))
        return _render(fig, name, caption)


# ---------------------------------------------------------------------------------------------- heatmaps
def heatmap_figure(
    name: str,
    matrices: Sequence[np.ndarray],
    *,
    titles: Sequence[str],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    xlabel: str = "predicted",
    ylabel: str = "true",
    formats: Sequence[str] = (),
    caption: str = "",
) -> Figure:
    """Annotated matrices side by side (confusion matrices: counts, row-normalised; co-occurrence).

    ``formats`` gives each panel's cell format (``"d"`` for counts, ``".2f"`` for fractions); the colour scale
    of each panel runs from 0 to its maximum.
    """
    n = len(row_labels)
    side = min(6.0, max(2.6, 0.42 * n + 1.6))
    formats = list(formats) or ["d"] * len(matrices)
    with _style():
        fig = _new_figure(side * len(matrices) * 1.08, side)
        axes = np.atleast_1d(fig.subplots(1, len(matrices), squeeze=False)).ravel()
        font = 8 if n <= 6 else 6.5 if n <= 12 else 5
        for ax, matrix, title, fmt in zip(axes, matrices, titles, formats):
            matrix = np.asarray(matrix, dtype=float)
            top = np.nanmax(matrix) if matrix.size and np.isfinite(matrix).any() else 1.0
            ax.imshow(np.nan_to_num(matrix), cmap="Blues", vmin=0, vmax=top or 1.0)
            ax.grid(False)
            ax.set_xticks(range(len(col_labels)), col_labels, rotation=45 if n > 3 else 0,
                          ha="right" if n > 3 else "center")
            ax.set_yticks(range(n), row_labels)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_title(title)
            for (i, j), value in np.ndenumerate(matrix):
                text = "–" if np.isnan(value) else format(int(value) if fmt == "d" else value, fmt)
                dark = not np.isnan(value) and value > 0.55 * top
                ax.text(j, i, text, ha="center", va="center", fontsize=font, color="white" if dark else "#222222")
        return _render(fig, name, caption)


# ----------------------------------------------------------------------------------------------- images
def image_grid_figure(
    name: str,
    images: Sequence[np.ndarray],
    *,
    titles: Sequence[str],
    title_colors: Sequence[str] | None = None,
    ncols: int = 6,
    caption: str = "",
) -> Figure:
    """Images (C, H, W uint8, one or three channels) in a grid, each with a short title."""
    ncols = max(1, min(ncols, len(images)))
    nrows = -(-len(images) // ncols)
    # each cell as wide as 1.75 in of image height times the widest image's aspect (an image beside its overlay
    # is twice as wide as tall), plus room for the two-line title
    aspect = max((np.asarray(i).shape[-1] / np.asarray(i).shape[-2] for i in images), default=1.0)
    with _style():
        fig = _new_figure(1.75 * ncols, (1.75 / aspect + 0.3) * nrows)
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for k, ax in enumerate(axes):
            ax.set_axis_off()
            if k >= len(images):
                continue
            image = np.asarray(images[k])
            if image.shape[0] == 1:
                ax.imshow(image[0], cmap="gray", vmin=0, vmax=255)
            else:
                ax.imshow(np.moveaxis(image, 0, -1))
            colour = title_colors[k] if title_colors else "#222222"
            ax.set_title(titles[k], fontsize=6.5, color=colour)
        return _render(fig, name, caption)
