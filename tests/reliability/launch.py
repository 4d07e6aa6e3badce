"""Run the real ``medclf`` command line with one fault injected at a named point: test plumbing, no production code.

``python tests/reliability/launch.py <medclf arguments>`` runs ``medclf.cli.main()`` in this process, with the
fault named by ``$MEDCLF_FAULT``::

    <action>:<point>:<glob>[@<n>]

- ``point`` is where: ``written`` (right after the n-th file whose path matches ``glob`` is renamed into place:
  a finished atomic write) or ``writing`` (when the n-th matching file is flushed with ``os.fsync``: inside an
  atomic write, before its rename; match the temporary's name, ``*/.name.*.tmp``).
- ``action`` is what happens there: ``kill`` (SIGKILL this process, as ``kill -9`` does), ``enospc`` or
  ``eacces`` (the ``fsync`` raises ``OSError(ENOSPC)`` / ``OSError(EACCES)`` without a file name, as a full disk
  or a revoked permission does; ``writing`` only) or ``pause``
  (write a line to the FIFO ``$MEDCLF_FAULT_FIFO.paused``, then block on ``$MEDCLF_FAULT_FIFO.resume`` until the
  test opens and closes it: the process stays alive at a known point, and the test needs no sleep).

Paths are matched with :func:`fnmatch.fnmatch` on the absolute POSIX path. The points are files, not functions,
so they survive refactors of the code that writes them: every file medclf writes goes through
``medclf.atomic`` (a temporary, ``fsync``, ``os.replace``). ``$MEDCLF_FAULT_NO_REPORT=1`` skips the report step
of ``medclf run`` in the cases that do not look at it (it is most of a tiny run's time);
``$MEDCLF_TEST_TORCH_THREADS=N`` runs the command on N torch threads (commands run on one by default).

``launch.py --serve`` is a fork server: it imports medclf (torch and timm: ~10 s) once, then reads JSON requests
on stdin and forks one child per command. Each child is its own process running ``medclf.cli.main()`` with its
own argv, environment, working folder, stdout and stderr files, so kill -9, locks and exit codes are those of a
real command, without paying the imports each time.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import select
import signal
import sys
import traceback


def _parse(spec: str) -> tuple[str, str, str, int]:
    action, point, rest = spec.split(":", 2)
    glob, _, nth = rest.partition("@")
    if action not in ("kill", "enospc", "eacces", "pause") or point not in ("written", "writing"):
        raise SystemExit(f"launch.py: bad MEDCLF_FAULT {spec!r}")
    return action, point, glob, int(nth or 1)


def _act(action: str, path: str) -> None:
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action in ("enospc", "eacces"):
        code = errno.ENOSPC if action == "enospc" else errno.EACCES
        raise OSError(code, os.strerror(code))
    fifo = os.environ["MEDCLF_FAULT_FIFO"]
    # the resume end is opened before saying "paused", so a test that releases at once is not missed
    resume = os.open(f"{fifo}.resume", os.O_RDONLY | os.O_NONBLOCK)
    with open(f"{fifo}.paused", "w") as paused:
        paused.write(f"{os.getpid()} {path}\n")
    select.select([resume], [], [])  # readable when the test opens and closes the other end
    os.close(resume)


def install(spec: str) -> None:
    """Wrap ``os.replace``/``os.rename`` (``written``) or ``os.fsync`` (``writing``) to act at the n-th match."""
    action, point, glob, nth = _parse(spec)
    seen = [0]

    def matches(path: str) -> bool:
        if not fnmatch.fnmatch(os.path.abspath(path).replace(os.sep, "/"), glob):
            return False
        seen[0] += 1
        return seen[0] == nth

    if point == "written":
        for name in ("replace", "rename"):
            original = getattr(os, name)

            def renamed(src, dst, *args, _original=original, **kwargs):
                result = _original(src, dst, *args, **kwargs)
                if matches(os.fsdecode(dst)):
                    _act(action, os.fsdecode(dst))
                return result

            setattr(os, name, renamed)
    else:
        original_fsync = os.fsync

        def fsync(fd):
            try:
                path = os.readlink(f"/proc/self/fd/{fd if isinstance(fd, int) else fd.fileno()}")
            except OSError:
                path = ""
            if path and matches(path):
                _act(action, path)
            return original_fsync(fd)

        os.fsync = fsync


def _skip_reports(cli) -> None:
    """No report from ``medclf run``/``sweep``: the CLI's report step (sweeps), and the report
    ``medclf.api.run_study`` writes (``medclf run`` calls it)."""
    import medclf.api as api

    cli._report = lambda folder: None
    run_study = api.run_study

    def without_report(*args, **kwargs):
        return run_study(*args, **{**kwargs, "report": False})

    api.run_study = without_report


def run_cli(argv: list[str]) -> int:
    """``medclf <argv>`` in this process, with ``$MEDCLF_FAULT`` installed; the exit code."""
    spec = os.environ.get("MEDCLF_FAULT")
    if spec:
        install(spec)
    import medclf.cli

    if os.environ.get("MEDCLF_FAULT_NO_REPORT") == "1":
        _skip_reports(medclf.cli)
    if threads := os.environ.get("MEDCLF_TEST_TORCH_THREADS"):  # as many as the test process that reads the run
        import torch

        torch.set_num_threads(int(threads))
    sys.argv = ["medclf", *argv]
    try:
        medclf.cli.main()
    except SystemExit as done:
        code = done.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------------------------- server
def _preload() -> None:
    """Import what every command needs; a module that fails to import (mid-edit) is imported by the child."""
    for name in ("medclf.cli", "medclf.config", "medclf.data", "medclf.models", "medclf.training",
                 "medclf.experiments", "medclf.experiments.sweep", "medclf.inference", "medclf.reporting",
                 "medclf.api"):
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 - the child imports it again and reports the error itself
            pass


def _child(request: dict) -> None:
    """In the forked child: become the requested command and exit with its code (never returns)."""
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, key in ((1, "stdout"), (2, "stderr")):
            target = os.open(request[key], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        code = run_cli(request["argv"])
    except BaseException:  # noqa: BLE001 - an uncaught error is printed as python would print it
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


def serve() -> None:
    """Answer ``{"op": "start", ...}`` with ``{"pid"}`` and ``{"op": "wait", "pid"}`` with ``{"returncode"}``."""
    _preload()
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "start":
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _child(request)
            reply = {"pid": pid}
        else:
            _, status = os.waitpid(request["pid"], 0)
            reply = {"returncode": -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        sys.exit(run_cli(sys.argv[1:]))
