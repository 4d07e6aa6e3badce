"""A full disk (a small tmpfs when the tests run as root, else an injected ENOSPC) and a permission error.

The command stops with one paragraph naming the file (no traceback, non-zero exit); the folds finished before
are kept, and the same command rerun with space resumes to the clean run's results.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from reliability_harness import assert_clean_refusal, file_hashes, results, stale_temporaries

# fold 0's weights (~1.5 MB) and the small files fit; fold 1's weights do not
TMPFS_SIZE = "2600k"


def _mount_tmpfs(folder: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


@pytest.mark.parametrize("disk", ["tmpfs", "injected"])
def test_a_full_disk_stops_the_run_naming_the_file_and_a_rerun_resumes(disk, cli, reference, tmp_path):
    mount = tmp_path / "disk"
    fault = None
    if disk == "tmpfs":
        if not _mount_tmpfs(mount, TMPFS_SIZE):
            pytest.skip("mounting a tmpfs needs root and a kernel that allows it")
    else:
        mount.mkdir()
        fault = "enospc:writing:*/fold-1/.model.safetensors.*.tmp"
    out = mount / "run"
    try:
        full = cli("run", reference.config, "--out", out, "--quiet", fault=fault, no_report=True)
        assert full.returncode != 0, full
        assert_clean_refusal(full, "fold-1/model.safetensors")
        assert "full" in full.stderr.lower() or "space" in full.stderr.lower(), full
        assert (out / "fold-0" / "complete.json").exists()  # the finished fold survived
        kept = file_hashes(out / "fold-0")
        assert not stale_temporaries(out)
        if disk == "tmpfs":
            subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
        resumed = cli("run", reference.config, "--out", out, "--quiet", no_report=True)
        assert resumed.returncode == 0, resumed
        assert "fold 0: already complete" in resumed.stdout
        assert file_hashes(out / "fold-0") == kept
        assert results(out) == reference.results
    finally:
        if disk == "tmpfs":
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_while_writing_the_report_loses_no_result(cli, reference, run_copy):
    kept = file_hashes(run_copy, derived=False)
    full = cli("report", run_copy, fault="enospc:writing:*/run/.report.html.*.tmp")
    assert_clean_refusal(full, "report.html")
    assert file_hashes(run_copy, derived=False) == kept
    assert not stale_temporaries(run_copy)


def test_a_permission_error_on_the_predictions_file_names_it(cli, reference, tmp_path):
    out = tmp_path / "predictions.csv"
    denied = cli("predict", reference.run_dir, reference.images, "--out", out, "--quiet",
                 fault="eacces:writing:*/.predictions.csv.*.tmp")
    assert_clean_refusal(denied, "predictions.csv")
    assert not out.exists() and not stale_temporaries(tmp_path)
