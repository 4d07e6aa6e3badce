"""Page, sections and figures: a self-contained HTML file with its figures and tables beside it."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from medclf.reporting import Bars, Page, Panel, Paragraph, Section, Series, Table, bar_figure, line_figure, write_page
from medclf.reporting.figures import heatmap_figure, image_grid_figure, palette

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
        assert fig.png.startswith(PNG)
        assert f'src="data:image/png;base64,{base64.b64encode(fig.png).decode()}"' in fig.to_html()


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
    assert (tmp_path / "figures" / "curve.png").read_bytes() == figure.png
    assert not re.search(r'(src|href)="(https?:|//|file:)', html)
