"""docs/reliability.md stays true: every row of its table names tests that exist, every fault test has a row,
and no row admits a silently wrong result."""

from __future__ import annotations

import ast
import fnmatch
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "reliability.md"
TABLE_HEADING = "## Faults and bad inputs tried"
REF = re.compile(r"`(tests/[\w/]+\.py::\w+(?:\[[^\]`]+\])?)`")


def _rows() -> list[list[str]]:
    """The cells of each row of the table under TABLE_HEADING (header and rule left out)."""
    text = DOC.read_text()
    assert TABLE_HEADING in text, f"{DOC} has no {TABLE_HEADING!r} section"
    section = text.split(TABLE_HEADING, 1)[1].split("\n#", 1)[0]  # up to the next heading
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def _collected() -> list[str]:
    """Node ids of this folder's tests, as pytest collects them (parametrized ids included)."""
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "tests/reliability"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return [line for line in done.stdout.splitlines() if "::" in line and not line.startswith(
        "tests/reliability/test_docs_table.py")]


def _defined(path: Path) -> set[str]:
    return {node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)}


def test_every_row_is_handled_names_its_tests_and_is_not_silently_wrong():
    rows = _rows()
    assert len(rows) >= 40
    for cells in rows:
        assert len(cells) == 4, cells  # case | what medclf does | silently wrong | tests
        assert cells[2] == "no", f"a row admits a silently wrong result: {cells}"
        assert REF.findall(cells[3]), f"a row names no test: {cells}"
    counts = re.search(r"(\d+) cases tried, (\d+) handled, (\d+) silently wrong", DOC.read_text())
    assert counts, "the summary line 'N cases tried, N handled, 0 silently wrong' is missing"
    assert [int(g) for g in counts.groups()] == [len(rows), len(rows), 0]


def test_every_named_test_exists_and_every_fault_test_has_a_row():
    collected = _collected()
    assert collected
    refs = [ref for cells in _rows() for ref in REF.findall(cells[3])]
    covered: set[str] = set()
    for ref in refs:
        path, _, name = ref.partition("::")
        if path.startswith("tests/reliability/"):
            pattern = ref if "[" in ref else ref + "*"
            matched = {node for node in collected if fnmatch.fnmatchcase(node, pattern.replace("[", "[[]", 1))}
            assert matched, f"{ref} in {DOC.name} matches no test of tests/reliability"
            covered |= matched
        else:
            assert (ROOT / path).exists(), f"{ref}: no such file"
            assert name.split("[")[0] in _defined(ROOT / path), f"{ref}: no such test"
    missing = sorted(set(collected) - covered)
    assert not missing, f"tests without a row in {DOC.name}: {missing}"
