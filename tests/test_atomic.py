import errno
import json
import math
import os
import subprocess
import sys

import pytest

from medclf import atomic
from medclf.atomic import (
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
    remove_stale_temporaries,
    storage_error,
)
from medclf.errors import StorageError


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "f.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_nan_becomes_null_in_json_and_empty_in_csv(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"auc": math.nan, "xs": [1.0, math.inf]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"auc": None, "xs": [1.0, None]}
    atomic_write_csv(tmp_path / "t.csv", [{"a": 1, "b": math.nan}], ["a", "b"])
    assert (tmp_path / "t.csv").read_text() == "a,b\n1,\n"


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path):
    (tmp_path / "fold-0").mkdir()
    dead = tmp_path / "fold-0" / f".metrics.json.{_dead_pid()}.0123abcd.tmp"
    live = tmp_path / f".summary.json.{os.getpid()}.89abcdef.tmp"
    other = [tmp_path / ".notes.tmp", tmp_path / "data.tmp", tmp_path / f".x.{_dead_pid()}.nothex!.tmp"]
    for path in [dead, live, *other]:
        path.write_text("half")

    assert remove_stale_temporaries(tmp_path, recursive=False) == []  # the dead one is in a subfolder
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert live.exists() and all(p.exists() for p in other)  # not atomic_write's names: never touched
    assert remove_stale_temporaries(tmp_path, locked=True) == [live]  # the caller holds the folder's lock
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_a_full_disk_is_one_paragraph_naming_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "fold-1" / "metrics.json"
    atomic_write_json(path, {"a": 1})

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(StorageError) as caught:
        atomic_write_json(path, {"a": 2})
    message = str(caught.value)
    assert message.startswith(f"Could not write {path}: the disk is full (ENOSPC). Free some space")
    assert "run the same command again" in message and "resumes" in message and "\n" not in message
    assert caught.value.errno == errno.ENOSPC and caught.value.path == path
    assert isinstance(caught.value, OSError)  # code that tolerates a failed optional write still catches it
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


@pytest.mark.parametrize(("code", "reason"), [(errno.EACCES, "permission denied"),
                                              (errno.EROFS, "the file system is read-only")])
def test_a_permission_error_names_the_file(tmp_path, monkeypatch, code, reason):
    def refuse(src, dst):
        raise OSError(code, os.strerror(code), str(dst))

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(StorageError, match=rf"Could not write {tmp_path / 'x.txt'}: {reason} .*Fix the permissions"):
        atomic_write_text(tmp_path / "x.txt", "x")
    assert list(tmp_path.iterdir()) == []


def test_other_os_errors_are_not_storage_errors(tmp_path, monkeypatch):
    assert storage_error(OSError(errno.EIO, "I/O error")) is None
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError) as caught:
        atomic_write_text(tmp_path / "x.txt", "x")
    assert not isinstance(caught.value, StorageError)


def test_the_ddp_guard_refuses_a_write_by_a_rank_but_0(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCLF_DDP_GUARD", "1")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(RuntimeError, match=r"rank 1 tried to write .*f\.json: under torchrun only rank 0 writes"):
        atomic_write_json(tmp_path / "f.json", {})
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("RANK", "0")
    atomic_write_json(tmp_path / "f.json", {})
    monkeypatch.delenv("MEDCLF_DDP_GUARD")
    monkeypatch.setenv("RANK", "1")
    atomic_write_json(tmp_path / "g.json", {})  # without the guard a write is a write (the guard is for tests)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json", "g.json"]
