"""One writer per run folder: the lock is exclusive across processes, taken over from a dead holder, re-entrant."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from medclf.errors import RunFolderError
from medclf.locking import LOCK_NAME, hold_run_folder, lock_holder

HOLD = """
import sys
from medclf.locking import hold_run_folder
with hold_run_folder(sys.argv[1], command="medclf run holder.yaml"):
    print("held", flush=True)
    sys.stdin.read()  # hold until the test closes stdin (or kills this process)
"""


def hold_in_subprocess(folder: Path) -> subprocess.Popen:
    """A live process holding ``folder``'s lock until its stdin is closed."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def release(holder: subprocess.Popen) -> None:
    holder.stdin.close()
    holder.wait(timeout=60)


def test_a_second_writer_is_refused_with_the_holders_pid_and_command(tmp_path):
    folder = tmp_path / "run"
    holder = hold_in_subprocess(folder)
    try:
        with pytest.raises(RunFolderError, match=rf"being written by process {holder.pid} \(medclf run holder.yaml"):
            with hold_run_folder(folder, command="medclf run mine.yaml"):
                pytest.fail("the lock was taken twice")
        assert lock_holder(folder)["pid"] == holder.pid  # the refused opener did not erase the holder's info
    finally:
        release(holder)
    with hold_run_folder(folder, command="medclf run mine.yaml"):  # released: now it is ours
        assert lock_holder(folder)["pid"] == os.getpid()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    holder = hold_in_subprocess(folder)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=60)
    assert lock_holder(folder)["pid"] == holder.pid  # its info is still in the file...
    with hold_run_folder(folder, command="medclf run again.yaml"):  # ...but the kernel released its lock
        assert lock_holder(folder)["command"] == "medclf run again.yaml"


def test_the_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    folder = tmp_path / "run"
    with hold_run_folder(folder, command="outer"):
        with hold_run_folder(folder / ".." / "run", command="inner"):  # the same folder, spelt differently
            assert lock_holder(folder)["command"] == "outer"
        assert lock_holder(folder)["command"] == "outer"  # the inner exit did not release it
    assert lock_holder(folder) is None  # released: a later refusal must not name a finished process
    assert (folder / LOCK_NAME).exists()  # never deleted: two processes could otherwise lock two files


def test_taking_the_lock_removes_the_folders_stale_temporaries(tmp_path):
    folder = tmp_path / "run"
    (folder / "fold-0").mkdir(parents=True)
    stale = folder / "fold-0" / f".metrics.json.{os.getpid()}.0123abcd.tmp"  # even a live pid: we hold the lock
    stale.write_text("{")
    kept = folder / "fold-0" / "metrics.json"
    kept.write_text("{}")
    with hold_run_folder(folder, command="medclf run"):
        assert not stale.exists() and kept.exists()


def test_a_missing_folder_is_not_created_without_create(tmp_path):
    with hold_run_folder(tmp_path / "nothing", command="medclf report", create=False) as folder:
        assert folder == tmp_path / "nothing"
    assert not (tmp_path / "nothing").exists()


def test_garbage_in_the_lock_file_is_no_holder_and_does_not_block(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_NAME).write_bytes(b"\x00\xff not json")
    assert lock_holder(folder) is None
    with hold_run_folder(folder, command="medclf run"):
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()


FORK_THEN_HOLD = """
import os, sys
from medclf.locking import hold_run_folder
with hold_run_folder(sys.argv[1], command="medclf sweep"):
    child = os.fork()
    if child == 0:  # a worker forked while the lock is held: lives until the test closes stdin
        os.read(0, 1)
        os._exit(0)
    print(child, flush=True)
    os.read(0, 1)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_keep_a_killed_parents_lock(tmp_path):
    folder = tmp_path / "run"
    parent = subprocess.Popen([sys.executable, "-c", FORK_THEN_HOLD, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=60)
        os.kill(child, 0)  # the child still runs...
        with hold_run_folder(folder, command="medclf run"):  # ...yet the lock died with the parent
            assert lock_holder(folder)["pid"] == os.getpid()
    finally:
        parent.stdin.close()  # the child's read returns: it exits
