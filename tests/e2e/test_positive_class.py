"""The positive class of a two-class task: by default the second class of the sorted order (``normal`` of
abnormal/normal); ``data.positive_class`` or ``data.classes`` puts another one second, and every output follows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from medclf.cli import app
from tiny_data import tiny_study

# the reports are read for their text; each figure is still built, and drawn for real elsewhere (figure_stub.py)
pytestmark = pytest.mark.usefixtures("figures_not_drawn")
runner = CliRunner()  # in-process: a fresh interpreter importing torch would cost more than the tiny run


def _ensemble_predictions(run: Path) -> tuple[list[str], list[dict]]:
    with open(run / "ensemble" / "predictions.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _auc_of(rows: list[dict], positive: str) -> float:
    """The ensemble's test AUC with ``positive`` as the positive class, from its predictions.csv."""
    return roc_auc_score([row["label"] == positive for row in rows], [float(row[f"prob_{positive}"]) for row in rows])


def _check_positive_class(run: Path, positive: str, negative: str) -> None:
    """summary.json, data.json, every fold's model.json, the predictions' columns, the ensemble AUC and the
    report all name ``positive`` as the positive class, second in the order."""
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data"]["classes"] == [negative, positive] and summary["data"]["positive_class"] == positive
    assert json.loads((run / "data.json").read_text())["positive_class"] == positive
    for fold in (0, 1):
        spec = json.loads((run / f"fold-{fold}" / "model.json").read_text())
        assert spec["class_names"] == [negative, positive] and spec["positive_class"] == positive
    columns, rows = _ensemble_predictions(run)
    assert columns.index(f"prob_{negative}") < columns.index(f"prob_{positive}")
    # a two-class AUC is the same whichever class is positive, but a label permuted apart from its name is not:
    # computed from the names and the prob_<positive> column, it must equal what medclf computed from indices
    auc = summary["ensemble"]["test"]["auc_macro"]
    assert auc == pytest.approx(_auc_of(rows, positive), abs=1e-9)
    assert summary["ensemble"]["test"][f"auc/{positive}"] == pytest.approx(auc, abs=1e-9)
    truth = np.array([row["label"] == positive for row in rows])
    predicted = np.array([row["predicted"] == positive for row in rows])
    expected = np.array([float(row[f"prob_{positive}"]) > float(row[f"prob_{negative}"]) for row in rows])
    np.testing.assert_array_equal(predicted, expected)
    assert summary["ensemble"]["test"][f"recall/{positive}"] == pytest.approx(predicted[truth].mean(), abs=1e-9)
    if "operating_points" in summary:  # the thresholds are chosen for the positive class
        points = summary["operating_points"]
        assert points["positive_class"] == positive
        assert {t["class"] for t in points["thresholds"]} <= {positive}
    assert f"<dt>positive class</dt><dd>{positive} (" in (run / "report.html").read_text()


def test_the_default_positive_class_is_the_second_in_sorted_order(binary_run: Path):
    _check_positive_class(binary_run, positive="normal", negative="abnormal")


@pytest.fixture()
def binary_config(binary_splits: Path, tmp_path: Path) -> Path:
    config = tiny_study(binary_splits, tmp_path / "cache", name="binary", training={"epochs": 1})
    path = tmp_path / "binary.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("override", ["data.positive_class=abnormal", "data.classes=[normal, abnormal]"])
def test_positive_class_or_classes_put_abnormal_second_in_every_output(binary_config: Path, tmp_path: Path,
                                                                        override: str):
    out = tmp_path / "run"
    done = runner.invoke(app, ["run", str(binary_config), "-o", override, "--out", str(out), "--quiet"])
    assert done.exit_code == 0, done.output
    assert "positive class: abnormal" in done.stdout
    _check_positive_class(out, positive="abnormal", negative="normal")


@pytest.mark.parametrize(("override", "message"), [
    ("data.positive_class=abnormall", "data.positive_class 'abnormall' is not a class of the data; the data's "
                                      "classes are ['abnormal', 'normal']. Is 'abnormall' a typo of 'abnormal'?"),
    ("data.classes=[normal, other]", "data.classes ['normal', 'other'] names ['other'], which the data does not "
                                     "have and leaves out ['abnormal']"),
])
def test_a_wrong_class_name_is_one_paragraph_naming_the_key(binary_config: Path, tmp_path: Path, override: str,
                                                            message: str):
    done = runner.invoke(app, ["run", str(binary_config), "-o", override, "--out", str(tmp_path / "run"), "--quiet"])
    assert done.exit_code == 2 and "Traceback" not in done.stderr
    assert message in " ".join(done.stderr.split())
