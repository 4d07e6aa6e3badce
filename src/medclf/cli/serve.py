"""`medclf serve`: a thin typer command (parse, call, print) registered on :data:`medclf.cli.app`."""

from __future__ import annotations

from medclf.cli import app  # noqa: F401  (the command registers on it)
