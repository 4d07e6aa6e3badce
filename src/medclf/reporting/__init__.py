"""Reporting: the run report (``report.html``) and a sweep's comparison (``comparison.html``).

Both are built from the same blocks: :class:`Table` (HTML, CSV, Markdown), :class:`Figure` (PNG, embedded
and saved) from the plot primitives of :mod:`medclf.reporting.figures`, and :class:`Section` /
:class:`Page` (a table of contents, inline CSS, print-friendly). Reporting reads run folders only.
"""

from medclf.reporting.comparison import write_comparison_html
from medclf.reporting.figures import (
    Bars,
    Figure,
    Panel,
    Series,
    bar_figure,
    heatmap_figure,
    image_grid_figure,
    line_figure,
    palette,
    split_color,
)
from medclf.reporting.page import Grid, KeyValues, Page, Paragraph, Preformatted, Section, write_page
from medclf.reporting.run_report import REPORT_NAME, build_report, write_report
from medclf.reporting.tables import Interval, MeanStd, Table

__all__ = [
    "Bars",
    "Figure",
    "Grid",
    "Interval",
    "KeyValues",
    "MeanStd",
    "Page",
    "Panel",
    "Paragraph",
    "Preformatted",
    "REPORT_NAME",
    "Section",
    "Series",
    "Table",
    "bar_figure",
    "build_report",
    "heatmap_figure",
    "image_grid_figure",
    "line_figure",
    "palette",
    "split_color",
    "write_comparison_html",
    "write_page",
    "write_report",
]
