"""One writer per run folder: an OS-level lock held for a command's whole life.

``medclf run``, ``demo``, ``report`` and ``sweep`` hold the lock of their output folder from before they read
or delete anything in it until they exit, so a second writer (a second ``--overwrite`` run, a ``report`` while
a run writes) is refused instead of mixing or deleting the first one's results.

The lock is ``flock`` (``msvcrt.locking`` on Windows) on ``<folder>/.medclf.lock``. The kernel releases it
when the holder's process ends, however it ends, so a lock left by a killed run is simply taken over; there
is no stale-lock timeout to tune. The file itself stays: deleting or replacing it would let two processes
lock two different files of the same name. After taking the lock its holder writes who it is (pid, host,
command, start time) into the file, which is what a refused writer reports.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medclf.atomic import remove_stale_temporaries, storage_error
from medclf.errors import RunFolderError

__all__ = ["LOCK_NAME", "hold_run_folder", "lock_holder"]

LOCK_NAME = ".medclf.lock"  # a leading dot: readers of the run folder ignore it

# resolved folder -> [file descriptor, depth]: a command that locks a folder and then calls code that locks
# it again (run, then its report) must not be refused by its own lock
_HELD: dict[Path, list[int]] = {}


def _forget_locks_in_child() -> None:
    """A forked child closes its copies of the lock descriptors: the lock must end with the process that took it.

    (A flock is shared by every copy of the descriptor; a child outliving a killed parent would otherwise keep
    the folder locked. Closing a copy does not release the parent's lock.)
    """
    for fd, _depth in _HELD.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks_in_child)

# errors that mean "the file system cannot lock", not "someone holds the lock"
_NO_LOCKING = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS} | (
    {errno.ENOTSUP} if hasattr(errno, "ENOTSUP") else set()
)


@contextmanager
def hold_run_folder(folder: str | Path, *, command: str, create: bool = True) -> Iterator[Path]:
    """Hold the lock of ``folder`` (a run or sweep folder) for the ``with`` block.

    Taking it first removes the temporaries a killed write left under the folder (no other writer can be
    finishing them). Re-entrant within one process.

    Args:
        folder: the run or sweep folder.
        command: what the holder is doing (e.g. ``"medclf run cfg.yaml"``), shown to a refused writer.
        create: create ``folder`` when missing. With False a missing folder is not locked (there is nothing to
            protect, and creating it would leave an empty folder behind); the caller's own check reports it.

    Yields:
        The folder.

    Raises:
        RunFolderError: another live process holds the lock; the message names its pid (and command).
        StorageError: the folder or its lock file cannot be created (full disk, no permission).
    """
    folder = Path(folder)
    key = folder.resolve()
    if key in _HELD:
        entry = _HELD[key]
        entry[1] += 1
        try:
            yield folder
        finally:
            entry[1] -= 1
        return
    if not create and not folder.is_dir():
        yield folder
        return
    fd = _acquire(folder, command)
    entry = _HELD[key] = [fd, 1]
    try:
        remove_stale_temporaries(folder, locked=True)
        yield folder
    finally:
        if _HELD.get(key) is entry:  # else a forked child, whose copy of fd is closed already
            del _HELD[key]
            _release(fd)


def lock_holder(folder: str | Path) -> dict[str, Any] | None:
    """What the holder of ``folder``'s lock wrote about itself (pid, host, command, started), or None."""
    try:
        with open(Path(folder) / LOCK_NAME, "rb") as handle:
            return _parse_holder(handle.read(_MAX_INFO))
    except OSError:
        return None


# ------------------------------------------------------------------------------------------- plumbing
_MAX_INFO = 4096
_WINDOWS_LOCK_OFFSET = 2**30  # Windows locks byte ranges: lock one far past the holder's info, which stays readable


def _acquire(folder: Path, command: str) -> int:
    """Open and lock ``folder/.medclf.lock``, write the holder's info into it, return its descriptor."""
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # no O_TRUNC: opening must not erase the info of a holder we are about to be refused by
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise (storage_error(error, path, action="create") or error) from error
    try:
        locked = _try_lock(fd)
    except OSError as error:
        os.close(fd)
        raise (storage_error(error, path, action="lock") or error) from error
    if not locked:
        holder = _parse_holder(_read_all(fd))
        os.close(fd)
        raise RunFolderError(_refusal(folder, holder))
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(info) + "\n").encode())
    except OSError:  # the lock is what matters; the info only makes a refusal friendlier
        pass
    return fd


def _try_lock(fd: int) -> bool:
    """Lock without waiting: True when taken, False when another process holds it."""
    try:
        if sys.platform == "win32":
            import msvcrt

            os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in _NO_LOCKING:
            warnings.warn(
                "This file system cannot lock files, so medclf cannot stop a second run from writing into the "
                "same folder at the same time; make sure only one does.",
                RuntimeWarning,
                stacklevel=4,
            )
            return True
        if error.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES, getattr(errno, "EDEADLOCK", -1)):
            return False
        raise
    return True


def _release(fd: int) -> None:
    """Erase the holder's info (a later refusal must not name a finished process) and unlock."""
    try:
        os.ftruncate(fd, 0)
    except OSError:
        pass
    os.close(fd)  # closing the descriptor releases the lock


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, _MAX_INFO)


def _parse_holder(raw: bytes) -> dict[str, Any] | None:
    try:
        info = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return info if isinstance(info, dict) and "pid" in info else None


def _refusal(folder: Path, holder: dict[str, Any] | None) -> str:
    """The one paragraph a refused writer prints."""
    if holder is None:
        who = "another process (it has only just taken the lock, or did not say who it is)"
    else:
        who = f"process {holder.get('pid')}"
        if holder.get("host") and holder["host"] != socket.gethostname():
            who += f" on {holder['host']}"
        if holder.get("command"):
            who += f" ({holder['command']}, started {holder.get('started', 'at an unknown time')})"
    return (
        f"{folder} is being written by {who}, which holds its lock {folder / LOCK_NAME}. Two writers would mix "
        "or delete each other's results: wait for it to finish (or stop it) and run again, or give another --out."
    )
