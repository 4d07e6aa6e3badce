"""Truncated, corrupted or deleted run-folder files: each is detected; nothing is silently wrong.

Every file of a finished run folder is damaged in turn (``truncate`` keeps its first half, ``corrupt`` zeroes
16 bytes in its middle, ``delete`` removes it) and handed to the commands that read it:

- ``medclf run`` (resume) retrains a damaged fold with a warning naming the file and ends with the clean run's
  results; a damaged run-level file is either re-established (same results) or refused naming it;
- ``medclf predict`` and ``medclf report`` either refuse with one paragraph naming the file (exit 2, no
  traceback), or, when they do not depend on it, give exactly what they give on the clean folder.
"""

from __future__ import annotations

import csv
import struct
from pathlib import Path

import pytest
from reliability_harness import (
    Result,
    assert_clean_refusal,
    damage,
    file_hashes,
    read_csv,
    report_files,
    rerecord,
    results,
    stale_temporaries,
)

FOLD_FILES = ("metrics.json", "predictions.csv", "model.safetensors", "model.json", "history.csv", "complete.json")
RUN_FILES = ("config.yaml", "run.json", "data.json", "splits.json", "audit.json", "summary.json", "folds.csv",
             "ensemble/predictions.csv", "gallery.npz")
MODES = ("truncate", "corrupt")
FOLD_CASES = [(f, m) for f in FOLD_FILES for m in MODES] + [("model.safetensors", "delete"), ("complete.json", "delete")]
RUN_CASES = [(f, m) for f in RUN_FILES for m in MODES]
# what predict reads (a fold's model, and whether the fold is complete), and what the report reads
PREDICT_CASES = [(f, m) for f, m in FOLD_CASES if f in ("model.safetensors", "model.json", "complete.json",
                                                        "metrics.json")]
REPORT_CASES = RUN_CASES + [(f, m) for f, m in FOLD_CASES if f in ("metrics.json", "predictions.csv", "history.csv",
                                                                   "complete.json")]


def _id(case: tuple[str, str]) -> str:
    return f"{case[0]}-{case[1]}"


def _refused_or_same(result: Result, name: str, same: bool) -> None:
    """Exit 2 naming ``name`` in one paragraph, or exit 0 with the clean folder's outcome (``same``)."""
    print(f"outcome: exit {result.returncode}: {' '.join(result.stderr.split())[:400]}")  # shown with pytest -rP
    if result.returncode == 0:
        assert same, f"exit 0 although the damaged {name} changed the outcome:\n{result}"
    else:
        assert_clean_refusal(result, name)


@pytest.mark.parametrize("case", FOLD_CASES, ids=_id)
def test_run_retrains_a_damaged_fold_and_names_the_file(case, cli, reference, run_copy):
    name, mode = case
    damage(run_copy / "fold-0" / name, mode)
    other = file_hashes(run_copy / "fold-1")

    resumed = cli("run", reference.config, "--out", run_copy, "--quiet", no_report=True)
    assert resumed.returncode == 0, resumed
    assert "Traceback" not in resumed.output
    warning = " ".join(resumed.output.split())
    assert f"fold-0/{name}" in warning and "fold 1: already complete" in warning, resumed
    assert results(run_copy) == reference.results
    assert file_hashes(run_copy / "fold-1") == other  # the sound fold was neither retrained nor touched
    assert set(file_hashes(run_copy / "fold-0")) == {k[7:] for k in reference.hashes if k.startswith("fold-0/")}
    assert not stale_temporaries(run_copy)


@pytest.mark.parametrize("case", RUN_CASES, ids=_id)
def test_run_on_a_damaged_run_file_re_establishes_it_or_refuses(case, cli, reference, run_copy):
    name, mode = case
    damage(run_copy / name, mode)
    folds = {k: file_hashes(run_copy / k) for k in ("fold-0", "fold-1")}

    resumed = cli("run", reference.config, "--out", run_copy, "--quiet", no_report=True)
    print(f"outcome: exit {resumed.returncode}: {' '.join(resumed.output.split())[:400]}")  # shown with pytest -rP
    if resumed.returncode == 0:
        assert "Traceback" not in resumed.output
        assert results(run_copy) == reference.results  # folds, summary and ensemble
        now = file_hashes(run_copy, derived=False)
        for rel in ("config.yaml", "run.json", "data.json", "splits.json", "folds.csv"):  # no timings in these
            assert now[rel] == reference.hashes[rel], f"{rel} differs from the clean run's"
    else:
        assert_clean_refusal(resumed, name.split("/")[-1])
    assert {k: file_hashes(run_copy / k) for k in folds} == folds  # finished folds are never lost


@pytest.mark.parametrize("case", PREDICT_CASES, ids=_id)
def test_predict_refuses_a_damaged_model_or_predicts_as_before(case, cli, reference, run_copy, tmp_path):
    name, mode = case
    damage(run_copy / "fold-0" / name, mode)
    out = tmp_path / "predictions.csv"
    done = cli("predict", run_copy, reference.images, "--out", out, "--quiet")
    same = done.returncode == 0 and _same_predictions(read_csv(out), reference.predictions)
    _refused_or_same(done, f"fold-0/{name}" if mode != "delete" else "fold-0", same)


def _same_predictions(rows: list[dict], expected: list[dict]) -> bool:
    """Same paths, same predicted classes, probabilities equal to 1e-6 (the same models on the same images)."""
    if [r["path"] for r in rows] != [r["path"] for r in expected]:
        return False
    for row, ref in zip(rows, expected):
        if row["predicted"] != ref["predicted"]:
            return False
        if any(abs(float(row[k]) - float(ref[k])) > 1e-6 for k in ref if k.startswith("prob_")):
            return False
    return True


@pytest.mark.parametrize("case", REPORT_CASES, ids=_id)
def test_report_refuses_a_damaged_file_or_reports_as_before(case, cli, reference, run_copy):
    name, mode = case
    path = run_copy / name if name in RUN_FILES else run_copy / "fold-0" / name
    damage(path, mode)
    kept = file_hashes(run_copy, derived=False)
    done = cli("report", run_copy)
    same = done.returncode == 0 and report_files(run_copy) == reference.report
    if name == "gallery.npz" and done.returncode == 0:  # only the gallery's images depend on it: the page says so
        page = " ".join((run_copy / "report.html").read_text().split())
        def others(files: dict) -> dict:  # the rest of the report: unchanged
            return {k: v for k, v in files.items() if k not in ("report.html", "figures/misclassified.png")}

        same = ("The images are not shown:" in page and "gallery.npz" in page
                and others(report_files(run_copy)) == others(reference.report))
    shown = name if name in RUN_FILES else f"fold-0/{name}"
    _refused_or_same(done, shown.split("/")[-1] if name in RUN_FILES else shown, same)
    assert file_hashes(run_copy, derived=False) == kept  # a report never changes results


# ------------------------------------------------------------------ damage the completion record cannot see
# A file altered and its complete.json rewritten to match (a bug, a tool, a sender): the record passes, so the
# readers' own checks must catch what is not a probability.


def _nan_weights(path: Path) -> None:
    """Every float of a safetensors file set to NaN (0xFF bytes), its header kept: it loads, and predicts NaN."""
    raw = path.read_bytes()
    start = 8 + struct.unpack("<Q", raw[:8])[0]
    path.write_bytes(raw[:start] + b"\xff" * (len(raw) - start))


@pytest.mark.parametrize("fold", [None, 0], ids=["ensemble", "one-fold"])
def test_weights_that_predict_nan_are_refused_naming_the_fold(fold, cli, reference, run_copy, tmp_path):
    _nan_weights(run_copy / "fold-0" / "model.safetensors")
    rerecord(run_copy / "fold-0")
    out = tmp_path / "predictions.csv"
    args = ("--fold", "0") if fold is not None else ()
    done = cli("predict", run_copy, reference.images, "--out", out, "--quiet", *args)
    assert_clean_refusal(done, "fold-0", "model.safetensors")
    assert not out.exists()


@pytest.mark.parametrize("change", ["half", "empty", "nan"])
def test_the_ensemble_refuses_a_recorded_row_that_is_not_a_probability(change, cli, reference, run_copy):
    path = run_copy / "fold-0" / "predictions.csv"
    rows = read_csv(path)
    test_row = next(r for r in rows if r["split"] == "test")
    prob = next(k for k in test_row if k.startswith("prob_"))
    test_row[prob] = {"half": str(float(test_row[prob]) / 2 - 0.25), "empty": "", "nan": "nan"}[change]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    rerecord(run_copy / "fold-0")
    kept = file_hashes(run_copy / "fold-1")
    done = cli("run", reference.config, "--out", run_copy, "--quiet", no_report=True)
    assert_clean_refusal(done, "fold-0/predictions.csv", test_row["id"])
    assert file_hashes(run_copy / "fold-1") == kept
