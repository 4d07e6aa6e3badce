"""The real ``medclf`` command against a run folder whose lock another live process holds; a full disk mid-run."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from medclf import atomic
from medclf.cli import app

HOLD = """
import sys
from medclf.locking import hold_run_folder
with hold_run_folder(sys.argv[1], command="medclf run other.yaml"):
    print("held", flush=True)
    sys.stdin.read()  # hold until the test closes stdin
"""


@pytest.fixture()
def held_folder(tmp_path: Path):
    """A run folder with a finished-looking result in it, locked by a live helper process: (folder, pid)."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"config_fingerprint": "another study"}))
    (folder / "summary.json").write_text("{}")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield folder, holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


def _results(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}


def test_a_second_run_into_a_locked_folder_exits_2_naming_the_holder(held_folder, tiny_config: Path):
    folder, pid = held_folder
    before = _results(folder)
    # in-process (the real app, without a second interpreter's start-up): the lock is another process's all the same
    done = CliRunner().invoke(app, ["run", str(tiny_config), "--out", str(folder), "--quiet"])
    assert done.exit_code == 2, done.output
    assert f"being written by process {pid} (medclf run other.yaml" in done.stderr
    assert "Traceback" not in done.stderr
    assert _results(folder) == before  # refused before reading or writing anything in it


def test_overwrite_cannot_delete_a_locked_folders_results(held_folder, tiny_config: Path):
    folder, pid = held_folder
    before = _results(folder)
    done = CliRunner().invoke(app, ["run", str(tiny_config), "--out", str(folder), "--quiet", "--overwrite"])
    assert done.exit_code == 2 and f"being written by process {pid}" in done.output
    assert _results(folder) == before  # --overwrite deleted nothing of the run that holds the lock


def test_report_into_a_locked_folder_exits_2(held_folder):
    folder, pid = held_folder
    done = CliRunner().invoke(app, ["report", str(folder)])
    assert done.exit_code == 2 and f"process {pid}" in done.stderr and "Traceback" not in done.stderr
    assert not (folder / "report.html").exists()


def test_a_sweep_into_a_locked_sweep_folder_exits_2(held_folder, tiny_config: Path, tmp_path: Path):
    folder, pid = held_folder
    cfg = yaml.safe_load(tiny_config.read_text()) | {"sweep": {"variants": {"a": {}, "b": {"training.epochs": 1}},
                                                               "baseline": "a"}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    before = _results(folder)
    done = CliRunner().invoke(app, ["sweep", str(tmp_path / "sweep.yaml"), "--out", str(folder)])
    assert done.exit_code == 2 and f"being written by process {pid}" in done.output
    assert _results(folder) == before


def test_a_full_disk_mid_run_is_one_paragraph_and_a_rerun_resumes(tiny_config: Path, tmp_path: Path, monkeypatch,
                                                                  figures_not_drawn):
    out = tmp_path / "run"
    args = ["run", str(tiny_config), "--out", str(out), "--quiet", "-o", "training.epochs=1"]
    real_replace = os.replace

    def full_in_fold_1(src, dst):
        if "fold-1" in str(dst):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", full_in_fold_1)
    failed = CliRunner().invoke(app, args)
    assert failed.exit_code == 2, failed.output
    assert "Could not write" in failed.output and "fold-1" in failed.output and "disk is full" in failed.output
    assert failed.exception is None or isinstance(failed.exception, SystemExit)  # no traceback
    weights = out / "fold-0" / "model.safetensors"
    finished = weights.stat().st_mtime_ns
    assert [p.name for p in out.rglob(".*.tmp")] == []  # the failed write's temporary was removed

    monkeypatch.setattr(atomic.os, "replace", real_replace)
    resumed = CliRunner().invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    assert weights.stat().st_mtime_ns == finished  # fold 0 was kept, not trained again
    assert json.loads((out / "summary.json").read_text())["metrics"]["test"]["accuracy"]["folds"][1] is not None
    assert yaml.safe_load((out / "config.yaml").read_text())["training"]["epochs"] == 1
