"""``--help`` of every command shows a flag as a flag: ``--quiet``, never ``--quiet <bool>`` or ``BOOLEAN``.

typer 0.29's rich help wrote a type after every flag (pyproject.toml pins typer below it); the commands are read
from the app itself, so a command or flag added later is checked too.
"""

from __future__ import annotations

import pytest
import typer.main
from typer.testing import CliRunner

from medclf.cli import app

runner = CliRunner()
_GROUP = typer.main.get_command(app)
_TYPE_OF_A_FLAG = ("<bool>", "BOOLEAN", "[true|false]", "<boolean>")


def _flags(command) -> list[str]:
    """The long names of a click command's flags, ``--help`` included."""
    ctx = command.make_context(command.name or "medclf", [], resilient_parsing=True)
    return [next(o for o in p.opts if o.startswith("--")) for p in command.get_params(ctx)
            if getattr(p, "is_flag", False) and p.param_type_name == "option"]


@pytest.mark.parametrize("name", [None, *sorted(_GROUP.commands)])
def test_every_flag_shows_as_a_flag_in_help(name: str | None) -> None:
    command = _GROUP if name is None else _GROUP.commands[name]
    done = runner.invoke(app, ([] if name is None else [name]) + ["--help"])
    assert done.exit_code == 0, done.output
    flags = _flags(command)
    assert "--help" in flags and (name is not None or "--version" in flags)
    for flag in flags:
        rows = [line for line in done.output.splitlines() if f"{flag} " in line or line.rstrip().endswith(flag)]
        assert rows, f"{flag} is not in the help of {name or 'medclf'}:\n{done.output}"
        assert not any(kind in row for row in rows for kind in _TYPE_OF_A_FLAG), (flag, rows)


def test_the_check_sees_the_commands_and_flags_it_should() -> None:
    # the parametrised test is only as good as the flags it finds: these exist and are flags
    assert {"run", "inspect", "audit", "predict", "explain"} <= set(_GROUP.commands)
    assert {"--quiet", "--overwrite", "--help"} <= set(_flags(_GROUP.commands["run"]))
    assert "--json" in _flags(_GROUP.commands["inspect"]) and "--out" not in _flags(_GROUP.commands["inspect"])
