"""docs/first-study.md, run as written: every command of the walk-through in order, in a fresh folder.

The doc's conventions, which this test reads:

* a fenced ```python or ```yaml block whose first line is ``# <file name>`` is a file the reader saves: it is
  written to that name;
* a fenced ```bash block holds commands, one a line (``medclf ...``, ``python ...``); each must exit 0, or N
  when the line ends with the comment ``# exits N``;
* a fenced ```text block right after a ```bash block is an excerpt of that block's output (stdout and stderr
  as a terminal 80 columns wide shows them): its lines must appear in the output in that order. ``...`` on a
  line of its own stands for lines left out, inside a line for text left out; whitespace and line wrapping
  are not compared. In the output of ``medclf run`` and ``medclf predict`` a decimal number stands for any
  decimal number (training results depend on the machine); everywhere else numbers are compared as written;
* every inline ``code`` path under the walk-through's outputs (``runs/nodules/...``, ``inspect/...``,
  ``predictions.csv``) names a file or folder the commands wrote.

``medclf`` runs in-process through typer's CliRunner (the same app as the ``medclf`` entry point, without
importing torch once per command); ``python`` runs as a child process of this interpreter.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medclf import cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "first-study.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
_EXITS = re.compile(r"#\s*exits\s+(\d+)\s*$")
_OUTPUT_PATH = re.compile(r"`((?:runs/nodules|inspect)(?:/[^`<>*\s]*)?|predictions\.csv)`")
_TRAINING_COMMANDS = ("run", "predict")  # their numbers depend on the machine's arithmetic


@dataclass
class Step:
    """One command of the walk-through, the exit status the doc expects and the excerpts of its output."""

    line: str
    doc_line: int
    status: int = 0
    excerpts: list[str] = field(default_factory=list)


def parse_walkthrough(text: str) -> tuple[dict[str, str], list[Step | tuple[str, str]]]:
    """The doc's saved files and, in order, its commands and file writes (("write", name) entries)."""
    files: dict[str, str] = {}
    sequence: list[Step | tuple[str, str]] = []
    last: list[Step] = []
    for match in _FENCE.finditer(text):
        lang, body = match.group(1), match.group(2)
        doc_line = text.count("\n", 0, match.start()) + 1
        first = body.splitlines()[0] if body.strip() else ""
        if lang in ("python", "yaml") and re.fullmatch(r"#\s*[\w.-]+", first.strip()):
            name = first.strip().lstrip("#").strip()
            files[name] = body
            sequence.append(("write", name))
            last = []
        elif lang == "bash":
            last = []
            for offset, line in enumerate(body.splitlines(), start=1):
                if line.strip() and not line.lstrip().startswith("#"):
                    exits = _EXITS.search(line)
                    step = Step(line.strip(), doc_line + offset, int(exits.group(1)) if exits else 0)
                    sequence.append(step)
                    last = [step]
        elif lang == "text" and last:
            last[-1].excerpts.append(body)
            last = []
        else:
            last = []
    return files, sequence


def _pattern(line: str, *, any_decimal: bool) -> str:
    pieces = []
    for piece in line.split("..."):
        escaped = re.escape(" ".join(piece.split()))
        if any_decimal:
            escaped = re.sub(r"\d+\\\.\d+", r"\\d+\\.\\d+", escaped)
        pieces.append(escaped)
    return ".*?".join(pieces)


def missing_excerpt_lines(excerpt: str, output: str, *, any_decimal: bool = False) -> list[str]:
    """The excerpt's lines not found in ``output`` in order (whitespace and wrapping ignored)."""
    flat = " ".join(output.split())
    position, missing = 0, []
    for line in excerpt.splitlines():
        if not line.strip() or line.strip() == "...":
            continue
        found = re.compile(_pattern(line.strip(), any_decimal=any_decimal)).search(flat, position)
        if found is None:
            missing.append(line)
        else:
            position = found.end()
    return missing


def _run(step: Step, folder: Path) -> tuple[int, str]:
    argv = shlex.split(step.line, comments=True)
    if argv[0] == "medclf":
        result = CliRunner().invoke(cli.app, argv[1:])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception  # a bug, not a refusal: keep its traceback
        return result.exit_code, result.output
    if argv[0] == "python":
        done = subprocess.run([sys.executable, *argv[1:]], cwd=folder, capture_output=True, text=True, timeout=300)
        return done.returncode, done.stdout + done.stderr
    raise AssertionError(f"docs/first-study.md line {step.doc_line}: the test runs medclf and python only: {step.line}")


@pytest.fixture()
def eighty_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's consoles as wide as the terminal the doc's excerpts were taken from."""
    for console in (cli.console, cli.err_console):
        monkeypatch.setattr(console, "width", 80)


def test_the_first_study_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, eighty_columns) -> None:
    text = DOC.read_text(encoding="utf-8")
    files, sequence = parse_walkthrough(text)
    assert {"draw.py", "study.yaml"} <= set(files), "the walk-through no longer saves draw.py and study.yaml"
    commands = [step.line for step in sequence if isinstance(step, Step)]
    for needed in ("medclf inspect", "medclf audit", "medclf validate", "--folds", "medclf predict"):
        assert any(needed in line for line in commands), f"the walk-through lost its `{needed}` step"
    monkeypatch.chdir(tmp_path)
    stale = []  # every stale excerpt in one failure, so that one run shows all the doc's lines to update
    for item in sequence:
        if isinstance(item, tuple):
            (tmp_path / item[1]).write_text(files[item[1]], encoding="utf-8")
            continue
        status, output = _run(item, tmp_path)
        where = f"docs/first-study.md line {item.doc_line}: `{item.line}`"
        assert status == item.status, f"{where} exited {status}, the doc says {item.status}:\n{output}"
        any_decimal = shlex.split(item.line)[1] in _TRAINING_COMMANDS if item.line.startswith("medclf") else False
        for excerpt in item.excerpts:
            missing = missing_excerpt_lines(excerpt, output, any_decimal=any_decimal)
            if missing:
                stale.append(f"{where}: the doc quotes lines it no longer prints: {missing}\nIt printed:\n{output}")
    assert not stale, "\n\n".join(stale)
    named = sorted(set(_OUTPUT_PATH.findall(text)))
    assert "runs/nodules/report.html" in named and "predictions.csv" in named
    absent = [path for path in named if not (tmp_path / path).exists()]
    assert not absent, f"docs/first-study.md names files the walk-through did not write: {absent}"


def test_a_stale_excerpt_is_caught() -> None:
    output = "folder source, 56 images, multiclass, classes ['nodule', 'normal'], imbalance \nratio 1.333\n  train: 56\n"
    assert missing_excerpt_lines("folder source, 56 images, ... imbalance ratio 1.333\n...\ntrain: 56", output) == []
    assert missing_excerpt_lines("folder source, 57 images", output) == ["folder source, 57 images"]
    assert missing_excerpt_lines("train: 56\nfolder source", output) == ["folder source"]  # order matters
    assert missing_excerpt_lines("imbalance ratio 1.500", output) == ["imbalance ratio 1.500"]
    assert missing_excerpt_lines("imbalance ratio 1.500", output, any_decimal=True) == []


def test_a_misquoted_command_or_status_is_caught() -> None:
    files, sequence = parse_walkthrough(
        "```python\n# draw.py\nprint(1)\n```\n\n```bash\nmedclf validate s.yaml -o a.b=1   # exits 2\n```\n\n"
        "```text\nerror: x\n```\n\n```bash\npython draw.py\n```\n")
    assert files == {"draw.py": "# draw.py\nprint(1)\n"}
    steps = [item for item in sequence if isinstance(item, Step)]
    assert sequence[0] == ("write", "draw.py")
    assert [(s.line, s.status, s.excerpts) for s in steps] == [
        ("medclf validate s.yaml -o a.b=1   # exits 2", 2, ["error: x\n"]), ("python draw.py", 0, [])]
