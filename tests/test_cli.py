"""The CLI's error boundary: a full disk or a permission error is one paragraph and exit 2, other errors pass."""

from __future__ import annotations

import errno

import pytest
import typer

from medclf.cli import _friendly_errors


def _command_raising(error: Exception):
    @_friendly_errors
    def command() -> None:
        raise error

    return command


@pytest.mark.parametrize(("code", "reason"), [(errno.EACCES, "permission denied"), (errno.ENOSPC, "the disk is full")])
def test_a_storage_error_outside_atomic_writes_is_one_paragraph(capsys, code, reason):
    command = _command_raising(OSError(code, "raw", "/runs/[study]/fold-0"))  # a folder medclf could not create
    with pytest.raises(typer.Exit) as caught:
        command()
    assert caught.value.exit_code == 2
    err = capsys.readouterr().err
    assert f"error: Could not access /runs/[study]/fold-0: {reason}" in err  # brackets kept: not read as markup
    assert "run the same command again" in err and "Traceback" not in err


def test_any_other_os_error_keeps_its_traceback():
    with pytest.raises(OSError, match="I/O error"):
        _command_raising(OSError(errno.EIO, "I/O error"))()
