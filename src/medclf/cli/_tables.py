"""The CLI's tables, fitted to the terminal: one rule for every table the commands print.

Each table has key columns (a metric's name, a variant, an image's path) and value columns. The keys start every
table; the value columns that do not fit beside them at the console's width go on in a further table with the
same keys, titled "(continued)". A cell too long for its column wraps (``overflow="fold"``) rather than ending in
an ellipsis: rich's default cut metric names to ``balanced_acc…`` in an 80-column terminal. A key column takes at
most a third of the width, so a long path or variant name wraps instead of leaving no room for values.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["Column", "fitted_tables", "print_fitted", "under_common_folder"]

_KEY_SHARE = 3  # a key column takes at most 1/_KEY_SHARE of the console's width


@dataclass(frozen=True)
class Column:
    """One column: its header and how its cells are aligned ("left" for text, "right" for numbers)."""

    header: str
    justify: str = "right"


def _table(keys: Sequence[Column], values: Sequence[Column], rows: Sequence[Sequence[str]], picked: Sequence[int],
           *, key_width: int) -> Table:
    table = Table()
    for column in keys:
        table.add_column(column.header, justify=column.justify, overflow="fold", max_width=key_width)
    for j in picked:
        table.add_column(values[j].header, justify=values[j].justify, overflow="fold")
    for row in rows:
        table.add_row(*row[: len(keys)], *[row[len(keys) + j] for j in picked])
    return table


def fitted_tables(keys: Sequence[Column], values: Sequence[Column], rows: Sequence[Sequence[str]], *, width: int,
                  console: Console) -> list[Table]:
    """The tables that show ``rows`` (key cells, then value cells) within ``width`` columns.

    Value columns are taken in order while the table's natural width (as rich measures it) fits; each table holds
    at least one value column, so a table of one key and one value column is the narrowest this rule makes.
    """
    key_width = max(8, width // _KEY_SHARE)
    wide = console.options.update_width(10 * width)  # measured unconstrained: the width the table would like
    groups: list[list[int]] = []
    for j in range(len(values)):
        if groups:
            trial = _table(keys, values, rows, [*groups[-1], j], key_width=key_width)
            if console.measure(trial, options=wide).maximum <= width:
                groups[-1].append(j)
                continue
        groups.append([j])
    return [_table(keys, values, rows, picked, key_width=key_width) for picked in groups or [[]]]


def print_fitted(console: Console, title: str, keys: Sequence[Column], values: Sequence[Column],
                 rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows`` as :func:`fitted_tables` at the console's width, each under its title.

    The title is a line of its own rather than the table's: rich wraps a table's title to the table's width.
    """
    for k, table in enumerate(fitted_tables(keys, values, rows, width=console.width, console=console)):
        console.print(Text(title if k == 0 else f"{title} (continued)", style="table.title"))
        console.print(table)


def under_common_folder(paths: Sequence[str]) -> tuple[str | None, list[str]]:
    """The folder every path in ``paths`` lies under and each path relative to it, so a table's path column
    holds what tells the images apart; ``(None, paths)`` when they share no folder but the root."""
    try:
        common = os.path.commonpath(paths) if paths else ""
    except ValueError:  # absolute and relative paths mixed
        return None, list(paths)
    if len(paths) == 1 or common in paths:  # one file: its own folder
        common = os.path.dirname(common)
    if common in ("", os.sep):
        return None, list(paths)
    return common, [os.path.relpath(p, common) for p in paths]
