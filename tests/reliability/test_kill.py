"""kill -9 at named points of run, report and sweep; the rerun ends with the uninterrupted run's results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from reliability_harness import file_hashes, report_files, results, stale_temporaries

# name -> (launch.py fault, what must be finished when it fires)
RUN_KILLS = {
    # fold 0's weights are in place, its record of completion is not: fold 0 must be trained again
    "fold-0-weights-written": ("kill:written:*/fold-0/model.safetensors", []),
    # fold 0 is finished; fold 1 has weights but no record
    "fold-1-weights-written": ("kill:written:*/fold-1/model.safetensors", ["fold-0"]),
    # inside the atomic write of fold 1's record: a temporary is left behind
    "fold-1-record-writing": ("kill:writing:*/fold-1/.complete.json.*.tmp", ["fold-0"]),
    # both folds finished, summary.json written, folds.csv not yet
    "summary-written": ("kill:written:*/run/summary.json", ["fold-0", "fold-1"]),
    # inside the report of `medclf run`, after its first figure
    "run-report-figure-written": ("kill:written:*/run/figures/*.png", ["fold-0", "fold-1"]),
}


@pytest.mark.parametrize("point", list(RUN_KILLS))
def test_run_killed_at_a_named_point_resumes_to_the_same_results(point, cli, reference, tmp_path):
    fault, finished = RUN_KILLS[point]
    in_report = "figures" in fault  # the report is most of a tiny run's time: run it only where it is killed
    out = tmp_path / "run"
    command = cli.start("run", reference.config, "--out", out, "--quiet", fault=fault, no_report=not in_report)
    killed = command.wait()
    assert killed.returncode == -9, killed
    assert json.loads((out / ".medclf.lock").read_text())["pid"] == command.pid  # the dead run held the lock
    before = {k: file_hashes(out / k) for k in finished}

    # the dead run's lock is taken over
    resumed = cli("run", reference.config, "--out", out, "--quiet", no_report=not in_report)
    assert resumed.returncode == 0, resumed
    assert results(out) == reference.results
    for k in finished:  # finished folds were kept, not retrained
        assert f"fold {k[-1]}: already complete" in resumed.stdout, resumed
        assert file_hashes(out / k) == before[k]
    assert not stale_temporaries(out)
    if in_report:  # the same report, except the wall times of the invocation that rebuilt summary.json
        timed = ("tables/timing.", "tables/model.", "report.html")
        assert report_files(out).keys() == reference.report.keys()
        assert {k: v for k, v in report_files(out).items() if not k.startswith(timed)} == {
            k: v for k, v in reference.report.items() if not k.startswith(timed)}
        assert "</html>" in (out / "report.html").read_text()


def test_report_killed_inside_its_figures_or_its_page_then_rerun(cli, reference, run_copy):
    # one folder through three reports (each ~9 s): killed after its second figure, then killed inside the
    # atomic write of report.html, then run to its end
    results_before = file_hashes(run_copy, derived=False)
    killed = cli("report", run_copy, fault="kill:written:*/run/figures/*.png@2")
    assert killed.returncode == -9, killed
    assert file_hashes(run_copy, derived=False) == results_before  # the report never touches results
    assert not stale_temporaries(run_copy)  # killed between two writes: nothing half-written

    killed = cli("report", run_copy, fault="kill:writing:*/run/.report.html.*.tmp")
    assert killed.returncode == -9, killed
    assert [p.name.startswith(".report.html.") for p in stale_temporaries(run_copy)] == [True], \
        "the kill point was not reached"

    again = cli("report", run_copy)
    assert again.returncode == 0, again
    assert not stale_temporaries(run_copy)  # a killed write's temporary is removed by the next command
    assert (run_copy / "report.html").stat().st_size > 0
    assert file_hashes(run_copy, derived=False) == results_before
    assert report_files(run_copy) == reference.report


@pytest.fixture()
def sweep_file(reference, tmp_path) -> Path:
    cfg = yaml.safe_load(reference.config.read_text())
    cfg["sweep"] = {"variants": {"adamw": {}, "sgd": {"training.optimizer.name": "sgd", "training.optimizer.lr": 0.01}},
                    "baseline": "adamw"}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _comparison(folder: Path) -> dict:
    comparison = json.loads((folder / "comparison.json").read_text())
    for v in comparison["variants"]:
        v.pop("train_time_s")
    return comparison


def test_sweep_killed_inside_a_variant_resumes_to_the_same_comparison(cli, sweep_file, tmp_path):
    clean = cli("sweep", sweep_file, "--out", tmp_path / "clean", no_report=True)
    assert clean.returncode == 0, clean

    out = tmp_path / "killed"
    # the first variant's fold 0 is finished, its fold 1 has weights but no record
    killed = cli("sweep", sweep_file, "--out", out, fault="kill:written:*/runs/*/fold-1/model.safetensors")
    assert killed.returncode == -9, killed
    finished = {p.parent: file_hashes(p.parent) for p in out.glob("runs/*/fold-*/complete.json")}
    assert 1 <= len(finished) < 4 and not (out / "comparison.json").exists()

    resumed = cli("sweep", sweep_file, "--out", out, no_report=True)
    assert resumed.returncode == 0, resumed
    assert "already complete" in resumed.stdout
    assert all(file_hashes(folder) == hashes for folder, hashes in finished.items())
    assert _comparison(out) == _comparison(tmp_path / "clean")
    for run in (tmp_path / "clean").glob("runs/*"):
        assert results(out / "runs" / run.name) == results(run)
    assert not stale_temporaries(out)
