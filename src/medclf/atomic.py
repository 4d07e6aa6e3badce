"""Atomic file writes: a killed run leaves the old file or the new one, never half of one.

Every file medclf writes (the decode cache, the run folder, predictions) goes through :func:`atomic_write`:
the content is written to a temporary name beside the target (starting with "." so listings ignore it),
flushed to disk, and renamed over the target with ``os.replace``.

A write that fails for lack of space or permission raises :class:`~medclf.errors.StorageError` naming the
target, and a temporary left by a killed process is removed by :func:`remove_stale_temporaries`.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from medclf.errors import StorageError

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_csv",
    "atomic_write_json",
    "atomic_write_text",
    "remove_stale_temporaries",
    "storage_error",
]

# errno -> what the user is told; the errors a user fixes by freeing space or changing permissions
_STORAGE_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EACCES: "permission denied",
    errno.EPERM: "the operation is not permitted",
    errno.EROFS: "the file system is read-only",
} | ({errno.EDQUOT: "the disk quota is exceeded"} if hasattr(errno, "EDQUOT") else {})

# the name atomic_write gives its temporaries: .{name}.{pid}.{8 hex}.tmp
_TEMPORARY = re.compile(r"^\..+\.(?P<pid>[0-9]+)\.[0-9a-f]{8}\.tmp$")


def storage_error(error: OSError, path: str | Path | None = None, *, action: str = "write") -> StorageError | None:
    """The one-paragraph :class:`StorageError` for a full disk or a permission error; None for any other error.

    Args:
        error: the OSError raised by the file system.
        path: the file or folder concerned (default: the error's own ``filename``).
        action: what medclf was doing with it, for the message ("write", "create", "access").
    """
    if isinstance(error, StorageError):
        return error
    reason = _STORAGE_ERRNOS.get(error.errno)  # type: ignore[arg-type]
    if reason is None:
        return None
    path = path if path is not None else (error.filename or "a file")
    code = errno.errorcode.get(error.errno, str(error.errno))  # type: ignore[arg-type]
    full = error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    fix = "Free some space" if full else "Fix the permissions"
    return StorageError(
        f"Could not {action} {path}: {reason} ({code}). {fix} (or choose another --out or data.cache_dir) and run "
        "the same command again: files already finished are kept, and a run resumes from its completed folds.",
        path=path,
        errno=error.errno,
    )


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(binary_file)`` on a temporary file beside ``path``, then rename it to ``path``.

    The temporary name is unique per process and call; on any failure it is removed and the error re-raised,
    as a :class:`StorageError` naming ``path`` when the disk is full or the write is not permitted.
    """
    path = Path(path)
    _refuse_other_ranks(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # e.g. the folder could not be created: there is nothing to remove
            pass
        friendly = storage_error(error, path) if isinstance(error, OSError) else None
        if friendly is None or friendly is error:
            raise
        raise friendly from error


def _refuse_other_ranks(path: Path) -> None:
    """Under torchrun only rank 0 writes; with ``MEDCLF_DDP_GUARD`` set, another rank's write is a bug that raises.

    (The tests of distributed training set it, so a write that slips past the rank gating fails the run.)
    """
    rank = os.environ.get("RANK", "0")
    if os.environ.get("MEDCLF_DDP_GUARD") and rank != "0":
        raise RuntimeError(f"rank {rank} tried to write {path}: under torchrun only rank 0 writes "
                           "(MEDCLF_DDP_GUARD is set to catch this)")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(value: Any) -> Any:
    """NaN and infinities are not JSON: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _jsonable(value.item())
    return value


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON; NaN and infinities become null."""
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n")


def atomic_write_csv(path: Path, rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> None:
    """Write dict rows as CSV with the given column order; floats at full precision, NaN as empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def remove_stale_temporaries(folder: str | Path, *, recursive: bool = True, locked: bool = False) -> list[Path]:
    """Remove the temporaries of :func:`atomic_write` that no running process will finish (a killed write's).

    A temporary is stale when the process whose pid is in its name is not running on this machine, or, with
    ``locked``, always: the caller holds the folder's lock (:mod:`medclf.locking`), so no other writer is
    writing there. A file that cannot be removed is left in place (it is never read, only wasted space).

    Args:
        folder: where to look; nothing happens when it does not exist.
        recursive: look in subfolders too (a run folder's ``fold-*/``); False for a flat folder (the cache).
        locked: the caller holds the folder's lock, so every temporary is stale.

    Returns:
        The paths removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    try:
        candidates = list(folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp"))
    except OSError:  # unreadable folder: its temporaries are not ours to judge
        return []
    for path in candidates:
        match = _TEMPORARY.match(path.name)
        if match is None or not (locked or not _pid_running(int(match["pid"]))):
            continue
        try:
            path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


def _pid_running(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (True when that cannot be told)."""
    if pid == os.getpid():
        return True
    if os.name != "posix":  # os.kill(pid, 0) would signal the process on Windows: assume it runs
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process (or a pid no process can have)
        return True
    return True
