"""Table: one description rendered as HTML, CSV and Markdown."""

from __future__ import annotations

import csv
import io

import pytest

from medclf.reporting.tables import Interval, MeanStd, Table, format_number


def _table() -> Table:
    return Table(
        name="t", title="A | table", columns=["metric", "fold 0", "mean ± std", "95 % CI", "seconds"],
        rows=[["accuracy", 0.91234, MeanStd(0.9, 0.0123), Interval(0.88, 0.92), 12.345],
              ["auc", None, MeanStd(0.8, None), Interval(None, None), float("nan")]],
        column_precision={"seconds": 1}, emphasis={1}, note="a note",
    )


def test_html_right_aligns_numbers_with_three_decimals():
    html = _table().to_html()
    assert '<th scope="row">accuracy</th><td class="num">0.912</td>' in html
    assert '<td class="num">0.900 ± 0.012</td><td class="num">0.880 – 0.920</td><td class="num">12.3</td>' in html
    assert '<td class="num">0.800</td><td class="num">–</td><td class="num">–</td>' in html  # one fold: no spread
    assert '<th scope="col">metric</th><th scope="col" class="num">fold 0</th>' in html
    assert '<tr class="em">' in html and "<caption>A | table</caption>" in html and "a note" in html


def test_html_escapes_text():
    html = Table(name="x", title="<b>", columns=["a"], rows=[["<script>"]]).to_html()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_csv_keeps_full_precision_and_splits_composites():
    rows = list(csv.reader(io.StringIO(_table().to_csv())))
    assert rows[0] == ["metric", "fold 0", "mean ± std mean", "mean ± std std", "95 % CI low", "95 % CI high", "seconds"]
    assert rows[1] == ["accuracy", "0.91234", "0.9", "0.0123", "0.88", "0.92", "12.345"]
    assert rows[2] == ["auc", "", "0.8", "", "", "", ""]


def test_markdown_aligns_numeric_columns_and_escapes_pipes():
    md = _table().to_markdown().splitlines()
    assert md[0] == "**A \\| table**"
    assert md[2] == "| metric | fold 0 | mean ± std | 95 % CI | seconds |"
    assert md[3] == "|---|---:|---:|---:|---:|"
    assert md[4] == "| accuracy | 0.912 | 0.900 ± 0.012 | 0.880 – 0.920 | 12.3 |"


def test_files_and_row_length_check():
    assert set(_table().files()) == {"tables/t.csv", "tables/t.md"}
    with pytest.raises(ValueError, match="row 0 has 1 cells for 2 columns"):
        Table(name="bad", title="", columns=["a", "b"], rows=[["x"]])


def test_format_number():
    assert format_number(0.5) == "0.500" and format_number(3) == "3" and format_number(372594) == "372,594"
    assert format_number(None) == "–" and format_number(float("nan")) == "–" and format_number(True) == "yes"


def test_alignment_is_decided_per_cell():
    # the model table mixes an architecture name and numbers in one column: the numbers still line up right
    html = Table(name="m", title="", columns=["", "value"],
                 rows=[["architecture", "resnet18"], ["parameters", 11_689_512], ["size (MB)", None]]).to_html()
    assert "<td>resnet18</td>" in html
    assert '<td class="num">11,689,512</td>' in html and '<td class="num">–</td>' in html
    assert '<th scope="col">value</th>' in html  # the header follows the column: not all numbers


def test_counts_have_no_decimals_and_their_spread_one():
    table = Table(name="c", title="", columns=["metric", "mean ± std"],
                  rows=[["n_patients", MeanStd(8.0, 0.0, count=True)], ["support", MeanStd(48.4, 0.548, count=True)],
                        ["accuracy", MeanStd(0.9, 0.01)]])
    assert [r[1] for r in table.display_rows()] == ["8 ± 0.0", "48 ± 0.5", "0.900 ± 0.010"]
    assert "48.4,0.548" in table.to_csv()  # the CSV keeps full precision
