"""Plumbing of the fault-injection suite: run the real CLI (through launch.py), damage files, compare results.

Imported by the tests of this folder (its conftest.py puts the folder on ``sys.path``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LAUNCHER = Path(__file__).with_name("launch.py")
TIMEOUT_S = 300  # one tiny command takes seconds; this only stops a hung one from hanging the suite
LOCK = ".medclf.lock"
# files of a run folder that a report rewrites (derived, not results)
DERIVED = ("report.html", "figures", "tables")


@dataclass(repr=False)
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __repr__(self) -> str:  # shown by a failing assert
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


class Command:
    """A started medclf command; :meth:`wait` gives its :class:`Result`."""

    def __init__(self, cli: Cli, pid: int, stdout: Path, stderr: Path, popen: subprocess.Popen | None = None):
        self.cli, self.pid, self.stdout, self.stderr, self.popen = cli, pid, stdout, stderr, popen

    def wait(self, timeout: float = TIMEOUT_S) -> Result:
        if self.popen is not None:
            try:
                code = self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                code = self.popen.wait()
        else:
            code = self.cli._wait(self.pid, timeout)
        return Result(code, self.stdout.read_text(errors="replace"), self.stderr.read_text(errors="replace"))


class Cli:
    """Starts ``medclf`` commands as separate processes: forked from a warm server, or plain subprocesses.

    The fork server (``launch.py --serve``) has torch and timm imported already; every command is still its own
    process with its own argv, environment and exit code. ``$MEDCLF_RELIABILITY_FORK=0`` uses plain
    ``python launch.py`` subprocesses instead (the same launcher, cold imports).
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self.env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # deterministic, and light on shared CPUs
        self.server: subprocess.Popen | None = None
        if os.environ.get("MEDCLF_RELIABILITY_FORK", "1") != "0" and hasattr(os, "fork"):
            self.server = subprocess.Popen([sys.executable, str(LAUNCHER), "--serve"], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, text=True, env=self.env, bufsize=1)
            ready = self._reply(TIMEOUT_S)
            assert "ready" in ready, ready

    def close(self) -> None:
        if self.server is not None:
            self.server.stdin.close()
            self.server.wait(timeout=60)

    def start(self, *args: str | Path, fault: str | None = None, no_report: bool = False,
              env: dict[str, str] | None = None, cwd: Path | None = None) -> Command:
        """Start ``medclf <args>``; ``fault`` is a launch.py fault (``kill:written:*/fold-0/model.safetensors``)."""
        self.count += 1
        stdout, stderr = (self.workdir / f"{self.count:03d}.{name}" for name in ("out", "err"))
        environ = dict(self.env) | (env or {})
        environ.pop("MEDCLF_FAULT", None)
        if fault:
            environ["MEDCLF_FAULT"] = fault
        if no_report:
            environ["MEDCLF_FAULT_NO_REPORT"] = "1"
        argv = [str(a) for a in args]
        cwd = cwd or self.workdir
        if self.server is None:
            with open(stdout, "w") as out, open(stderr, "w") as err:
                popen = subprocess.Popen([sys.executable, str(LAUNCHER), *argv], stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, env=environ, cwd=cwd)
            return Command(self, popen.pid, stdout, stderr, popen)
        self._send({"op": "start", "argv": argv, "env": environ, "cwd": str(cwd), "stdout": str(stdout),
                    "stderr": str(stderr)})
        return Command(self, self._reply(30)["pid"], stdout, stderr)

    def __call__(self, *args: str | Path, **kwargs: Any) -> Result:
        """Run ``medclf <args>`` to its end."""
        return self.start(*args, **kwargs).wait()

    def _send(self, request: dict) -> None:
        self.server.stdin.write(json.dumps(request) + "\n")
        self.server.stdin.flush()

    def _reply(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.server.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"the medclf fork server did not answer within {timeout} s")
        line = self.server.stdout.readline()
        if not line:
            raise RuntimeError("the medclf fork server died")
        return json.loads(line)

    def _wait(self, pid: int, timeout: float) -> int:
        self._send({"op": "wait", "pid": pid})
        try:
            return self._reply(timeout)["returncode"]
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)  # our own child: a hung command
            return self._reply(60)["returncode"]


class Pause:
    """The FIFOs of a ``pause`` fault: wait until the command reached its point, then let it go on."""

    def __init__(self, folder: Path) -> None:
        self.base = folder / "fault"
        for suffix in (".paused", ".resume"):
            os.mkfifo(f"{self.base}{suffix}")
        self.env = {"MEDCLF_FAULT_FIFO": str(self.base)}

    def reached(self, timeout: float = TIMEOUT_S) -> str:
        """Block until the command pauses; its ``"<pid> <path>"`` line ('' when it never got there)."""
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(open(f"{self.base}.paused").read()), daemon=True)
        reader.start()
        reader.join(timeout)
        if reader.is_alive():  # never paused: unblock our reader by opening the other end
            with open(f"{self.base}.paused", "w"):
                pass
            reader.join()
            return ""
        return line[0].strip() if line else ""

    def release(self) -> None:
        """Let the paused command go on (nothing happens when it never paused, or is gone)."""
        try:
            os.close(os.open(f"{self.base}.resume", os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # ENXIO: no reader, the command is not paused there
            pass


# -------------------------------------------------------------------------------------------- run folders
def file_hashes(folder: Path, *, derived: bool = True) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path (the lock file left out; report files optional)."""
    out = {}
    for path in sorted(Path(folder).rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if not path.is_file() or path.name == LOCK:
            continue
        if not derived and rel.split("/")[0] in DERIVED:
            continue
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def results(folder: Path) -> dict[str, Any]:
    """What a study computed, without timings: each fold's metrics.json and summary.json's metrics and ensemble."""
    folder = Path(folder)
    out: dict[str, Any] = {}
    for metrics in sorted(folder.glob("fold-*/metrics.json")):
        fold = json.loads(metrics.read_text())
        out[metrics.parent.name] = {k: v for k, v in fold.items() if k != "timing"}
    summary = json.loads((folder / "summary.json").read_text())
    out["summary"] = {k: summary[k] for k in ("metrics", "ensemble", "ensemble_confusion", "best_epochs", "data")}
    out["ensemble/predictions.csv"] = read_csv(folder / "ensemble" / "predictions.csv")
    return out


def report_files(folder: Path) -> dict[str, str]:
    """The report's files by relative path: sha256 of figures/ and tables/, report.html's text with the folder's
    own path and its time of writing replaced. A report is a pure function of the run folder's results."""
    folder = Path(folder)
    out = {rel: digest for rel, digest in file_hashes(folder).items() if rel.split("/")[0] in ("figures", "tables")}
    page = (folder / "report.html").read_text().replace(str(folder), "RUN_DIR")
    out["report.html"] = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", "<written at>", page)  # the footer's time
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def stale_temporaries(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob(".*.tmp"))


def damage(path: Path, mode: str) -> None:
    """Damage a file as a crash or a bad disk would: ``truncate`` (keep the first half), ``corrupt`` (the middle
    16 bytes, or all of a shorter file, overwritten with zeros: same size), ``delete``, ``empty``."""
    data = path.read_bytes()
    if mode == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif mode == "corrupt":
        middle = max(0, len(data) // 2 - 8)
        zeros = b"\0" * min(16, len(data))
        path.write_bytes(data[:middle] + zeros + data[middle + len(zeros):])
        assert path.stat().st_size == len(data) and path.read_bytes() != data
    elif mode == "delete":
        path.unlink()
    elif mode == "empty":
        path.write_bytes(b"")
    else:
        raise ValueError(mode)


def rerecord(fold: Path) -> None:
    """Make ``fold/complete.json`` list the fold's files as they are now, as a tool or a hostile sender could: the
    record is a check against accidents, not a signature, so what it cannot see must be caught by the readers."""
    record_path = Path(fold) / "complete.json"
    record = json.loads(record_path.read_text())
    for name in record["files"]:
        data = (Path(fold) / name).read_bytes()
        record["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    record_path.write_text(json.dumps(record, indent=2))


def assert_clean_refusal(result: Result, *names: str) -> None:
    """Exit 2, no traceback, one paragraph on stderr that names each of ``names``."""
    print(f"refusal: exit {result.returncode}: {' '.join(result.stderr.split())[:600]}")  # shown with pytest -rP
    assert result.returncode == 2, result
    assert "Traceback" not in result.output, result
    message = " ".join(result.stderr.split())  # rich wraps long lines; the paragraph is what counts
    for name in names:
        assert name in message, f"{name!r} not named in the error:\n{result}"
    # the error is one paragraph: a single "error:" that ends stderr (warnings may come before it)
    assert result.stderr.count("error:") == 1 and "\n\n" not in result.stderr.split("error:")[1].strip(), result
