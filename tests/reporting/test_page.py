"""Page, sections and figures: a self-contained HTML file with its figures and tables beside it."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import medclf.reporting
from medclf.reporting import (
    Bars,
    Page,
    Panel,
    Paragraph,
    Section,
    Series,
    Table,
    bar_figure,
    heatmap_figure,
    image_grid_figure,
    line_figure,
    write_page,
)
from medclf.reporting.figures import SAVE_DPI, SPLIT_COLORS, _draw_lines, _style, palette, split_color

PNG = b"\x89PNG\r\n\x1a\n"


def test_palette_is_stable_and_distinct():
    a = palette(["x", "y", "z"])
    assert a == palette(["x", "y", "z"]) and len(set(a.values())) == 3
    assert a["x"] == "#1f77b4"  # tab10's first colour
    assert len(set(palette([str(i) for i in range(15)]).values())) == 15
    assert len(set(palette([str(i) for i in range(30)]).values())) == 30


def test_primitives_render_png():
    line = line_figure("l", [Panel("p", "x", "y", [Series([0, 1], [0, 1], "a")], vlines=[(0.5, "mark", "k", "--")])])
    bars = bar_figure("b", ["a", "b"], [Bars("s", [0.5, None], [0.4, None], [0.6, None])])
    heat = heatmap_figure("h", [[[1, 2], [3, 4]]], titles=["t"], row_labels=["a", "b"], col_labels=["a", "b"])
    grid = image_grid_figure("g", [[[[0, 255], [255, 0]]]], titles=["one"])
    for fig in (line, bars, heat, grid):
        assert fig.png.startswith(PNG) and fig.preview.startswith(PNG)
        assert f'src="data:image/png;base64,{base64.b64encode(fig.preview).decode()}"' in fig.to_html()


def test_saved_figures_have_print_resolution_and_the_page_embeds_a_lighter_copy():
    from PIL import Image

    fig = line_figure("l", [Panel("p", "x", "y", [Series([0, 1, 2], [0, 1, 0], "a")])])
    full, small = Image.open(io.BytesIO(fig.png)), Image.open(io.BytesIO(fig.preview))
    assert SAVE_DPI >= 200 and round(full.info["dpi"][0]) == SAVE_DPI
    assert abs(full.width - 3.4 * 1.1 * SAVE_DPI) <= 1  # one panel of 3.4 in x 1.1
    assert small.size == (-(-full.width // 2), -(-full.height // 2))
    assert fig.files() == {"figures/l.png": fig.png}
    html = fig.to_html()
    assert base64.b64encode(fig.preview).decode() in html and base64.b64encode(fig.png).decode() not in html


def test_a_legend_outside_the_axes_covers_no_panel():
    # the training curves' legend, when the kept epoch is the last one (the marker sits on the right edge)
    panel = Panel("loss", "epoch", "loss", [Series([1, 2, 3, 4], [1.0, 0.6, 0.5, 0.45], "train")],
                  vlines=[(4, "kept epoch 4", "k", "--")], legend="outside")
    other = Panel("auc", "epoch", "auc", [Series([1, 2, 3, 4], [0.6, 0.7, 0.8, 0.9])], legend=None)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    with _style():
        fig = _draw_lines([panel, other], ncols=None, panel_size=3.1)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        (legend,) = fig.legends
        box = legend.get_window_extent(renderer)
        assert [t.get_text() for t in legend.get_texts()] == ["train", "kept epoch 4"]
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), ax.get_title()


def test_splits_keep_one_colour_whatever_the_run_has():
    assert [split_color(s) for s in ("val", "holdout", "test", "ensemble")] == [
        SPLIT_COLORS[s] for s in ("val", "holdout", "test", "ensemble")]
    assert len({split_color(s) for s in ("train", "val", "holdout", "test", "ensemble")}) == 5


def test_the_building_blocks_docs_report_md_names_are_exported():
    text = (Path(__file__).parents[2] / "docs" / "report.md").read_text()
    blocks = text.split("## Building blocks", 1)[1]
    names = set(re.findall(r"`([A-Za-z_]+)`", blocks)) - {"medclf"}
    assert "image_grid_figure" in names and names <= set(medclf.reporting.__all__), names - set(medclf.reporting.__all__)


def test_page_has_a_table_of_contents_and_writes_its_files(tmp_path: Path):
    table = Table(name="numbers", title="Numbers", columns=["a", "b"], rows=[["x", 1.0]])
    figure = line_figure("curve", [Panel("p", "x", "y", [Series([0, 1], [1, 0])])], caption="A curve.")
    page = Page(title="T", subtitle="sub", sections=[
        Section("First part", [table], subsections=[Section("Inner", [figure])]),
        Section("Second", [Paragraph("<text>", "note")]),
    ])
    path = write_page(page, tmp_path, "page.html")
    html = path.read_text()
    assert '<a href="#first-part">First part</a>' in html and '<a href="#inner">Inner</a>' in html
    assert '<section id="first-part"><h2>First part</h2>' in html and "<h3>Inner</h3>" in html
    assert "&lt;text&gt;" in html and "@media print" in html
    assert (tmp_path / "tables" / "numbers.csv").read_text() == "a,b\nx,1.0\n"
    assert (tmp_path / "tables" / "numbers.md").exists()
    assert (tmp_path / "figures" / "curve.png").read_bytes() == figure.png  # the print-resolution copy
    assert not re.search(r'(src|href)="(https?:|//|file:)', html)


def test_print_breaks_before_sections_not_before_the_contents():
    from medclf.reporting.page import CSS

    printed = CSS.split("@media print", 1)[1]
    assert "main>section+section{break-before:page}" in printed
    assert not re.search(r"(^|[\s}])h2\{[^}]*break-before", printed)  # would also break before the contents
    assert "nav.toc{" in printed and "break-after:page" not in printed
