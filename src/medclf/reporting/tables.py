"""Tables: one description, three renderings (HTML for the report, CSV and Markdown to paste elsewhere).

Cells are plain values (str, int, float, None) or the two composites of a results table, :class:`MeanStd`
and :class:`Interval`. Numbers are right-aligned (cell by cell, so a column mixing text and numbers still
lines its numbers up) and shown with a fixed number of decimals; the CSV keeps
full precision and splits a composite into two columns (``<column> mean`` / ``<column> std``,
``<column> low`` / ``<column> high``) so a spreadsheet gets numbers, not text.
"""

from __future__ import annotations

import csv
import html
import io
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Interval", "MeanStd", "Table", "format_number"]

MISSING = "–"  # shown for an undefined value (NaN, None); an empty cell in CSV
NUM = ' class="num"'  # right-aligned, tabular figures


@dataclass(frozen=True)
class MeanStd:
    """A mean with its standard deviation, shown as ``0.912 ± 0.020`` (std None: the mean alone).

    ``count``: the values are counts (images, patients), shown as ``48 ± 0.4`` whatever the column's precision.
    """

    mean: float | None
    std: float | None = None
    count: bool = False


@dataclass(frozen=True)
class Interval:
    """A confidence interval, shown as ``0.890 – 0.934``; None bounds mean undefined."""

    low: float | None
    high: float | None


def _undefined(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_number(value: Any, precision: int = 3) -> str:
    """A float with ``precision`` decimals, an int as is, an undefined value as an en dash."""
    if _undefined(value):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)  # 372,594 parameters; 4708 images
    if isinstance(value, float):
        return f"{value:.{precision}f}"
    return str(value)


def _display(value: Any, precision: int) -> str:
    if isinstance(value, MeanStd):
        if _undefined(value.mean):
            return MISSING
        mean_precision, std_precision = (0, 1) if value.count else (precision, precision)
        if _undefined(value.std):
            return format_number(value.mean, mean_precision)
        return f"{format_number(value.mean, mean_precision)} ± {format_number(value.std, std_precision)}"
    if isinstance(value, Interval):
        if _undefined(value.low) or _undefined(value.high):
            return MISSING
        return f"{format_number(value.low, precision)} – {format_number(value.high, precision)}"
    return format_number(value, precision)


def _is_numeric(value: Any) -> bool:
    return isinstance(value, (int, float, MeanStd, Interval)) and not isinstance(value, bool)


def _csv_value(value: Any) -> Any:
    if _undefined(value):
        return ""
    return value


@dataclass
class Table:
    """A titled table that renders to HTML, CSV and Markdown.

    Attributes:
        name: file stem under ``tables/`` (``tables/<name>.csv``, ``tables/<name>.md``); unique in a report.
        title: caption shown above the table.
        columns: column headers.
        rows: one list of cells per row, in column order.
        note: a sentence shown under the table (what the numbers are, how they were computed).
        precision: decimals of floats; ``column_precision`` overrides it per column (seconds, p-values...).
        emphasis: indices of rows shown bold (totals, averages).
    """

    name: str
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""
    precision: int = 3
    column_precision: dict[str, int] = field(default_factory=dict)
    emphasis: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.name!r}: row {i} has {len(row)} cells for {len(self.columns)} columns")

    def _precision(self, column: str) -> int:
        return self.column_precision.get(column, self.precision)

    def _numeric_columns(self) -> list[bool]:
        """A column is numeric (header and Markdown right-aligned) when its defined cells are all numbers."""
        out = []
        for j in range(len(self.columns)):
            cells = [row[j] for row in self.rows if not _undefined(row[j])]
            out.append(bool(cells) and all(_is_numeric(c) for c in cells))
        return out

    def display_rows(self) -> list[list[str]]:
        """The cells as shown in HTML and Markdown."""
        return [[_display(c, self._precision(col)) for c, col in zip(row, self.columns)] for row in self.rows]

    def to_html(self) -> str:
        numeric = self._numeric_columns()
        # per cell: a number is right-aligned in any column; a missing value where the column has numbers
        has_numbers = [any(_is_numeric(row[j]) for row in self.rows) for j in range(len(self.columns))]
        head = "".join(
            f'<th scope="col"{NUM if num else ""}>{html.escape(col)}</th>'
            for col, num in zip(self.columns, numeric)
        )
        body = []
        for i, (row, cells) in enumerate(zip(self.rows, self.display_rows())):
            tds = []
            for j, (value, text) in enumerate(zip(row, cells)):
                tag = "th" if j == 0 else "td"
                scope = ' scope="row"' if j == 0 else ""
                right = _is_numeric(value) or (_undefined(value) and has_numbers[j])
                cls = NUM if right else ""
                tds.append(f"<{tag}{scope}{cls}>{html.escape(text)}</{tag}>")
            row_cls = ' class="em"' if i in self.emphasis else ""
            body.append(f"<tr{row_cls}>{''.join(tds)}</tr>")
        note = f'<p class="note">{html.escape(self.note)}</p>' if self.note else ""
        return (
            f'<div class="table" id="table-{html.escape(self.name)}"><table>'
            f"<caption>{html.escape(self.title)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>{note}</div>"
        )

    def to_markdown(self) -> str:
        numeric = self._numeric_columns()

        def cell(text: str) -> str:
            return text.replace("|", "\\|").replace("\n", " ")

        lines = [f"**{cell(self.title)}**", ""]
        lines.append("| " + " | ".join(cell(c) for c in self.columns) + " |")
        lines.append("|" + "|".join("---:" if num else "---" for num in numeric) + "|")
        for cells in self.display_rows():
            lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
        if self.note:
            lines += ["", cell(self.note)]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """Full precision; a MeanStd or Interval column becomes two columns."""
        kinds = []
        for j in range(len(self.columns)):
            cells = [row[j] for row in self.rows]
            kind = MeanStd if any(isinstance(c, MeanStd) for c in cells) else None
            kind = Interval if any(isinstance(c, Interval) for c in cells) else kind
            kinds.append(kind)
        header: list[str] = []
        for col, kind in zip(self.columns, kinds):
            if kind is MeanStd:
                header += [f"{col} mean", f"{col} std"]
            elif kind is Interval:
                header += [f"{col} low", f"{col} high"]
            else:
                header.append(col)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        for row in self.rows:
            out: list[Any] = []
            for value, kind in zip(row, kinds):
                if kind is MeanStd:
                    pair = (value.mean, value.std) if isinstance(value, MeanStd) else (value, None)
                    out += [_csv_value(v) for v in pair]
                elif kind is Interval:
                    pair = (value.low, value.high) if isinstance(value, Interval) else (None, None)
                    out += [_csv_value(v) for v in pair]
                else:
                    out.append(_csv_value(value))
            writer.writerow(out)
        return buffer.getvalue()

    def files(self) -> dict[str, bytes]:
        """Relative path -> content of the files this table adds to the report folder."""
        return {
            f"tables/{self.name}.csv": self.to_csv().encode("utf-8"),
            f"tables/{self.name}.md": self.to_markdown().encode("utf-8"),
        }
