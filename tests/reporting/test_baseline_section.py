"""The report's "Against its frozen features" section, from summary.json's "baseline" block alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medclf.atomic import atomic_write_json
from medclf.evaluation.metrics import aggregate_folds
from medclf.reporting import write_report
from medclf.reporting.baseline import SECTION_TITLE, WARNING_START, baseline_section, baseline_warning
from medclf.reporting.tables import MeanStd

MODEL = {"holdout": [0.71, 0.69, 0.73], "test": [0.70, 0.74, 0.68]}  # run order: holdout before test
PROBE = {"holdout": [0.66, 0.65, 0.70], "test": [0.78, 0.80, 0.77]}


def _metrics(folds: dict[str, list[float]]) -> dict:
    return {split: aggregate_folds([{"auc_macro": v} for v in values]) for split, values in folds.items()}


def _pair(model: list[float], probe: list[float], *, p: float | None, beats: bool) -> dict:
    m, b = sum(model) / len(model), sum(probe) / len(probe)
    return {"metric": "auc_macro", "model": m, "baseline": b, "diff": m - b, "p_value": p, "wilcoxon_p": p,
            "beats": beats, "verdict": "fabricated"}


def _summary(*, test_beats: bool = False, holdout_beats: bool = True, splits=("holdout", "test")) -> dict:
    beats = {"test": test_beats, "holdout": holdout_beats}
    p = {"test": 0.0123, "holdout": 0.0456}
    return {
        "metrics": {s: v for s, v in _metrics(MODEL).items() if s in splits},
        "baseline": {
            "kind": "linear_probe",
            "metrics": {s: v for s, v in _metrics(PROBE).items() if s in splits},
            "paired": {s: _pair(MODEL[s], PROBE[s], p=p[s], beats=beats[s]) for s in splits},
        },
    }


def _table(section):
    return next(b for b in section.blocks if getattr(b, "name", None) == "baseline")


def test_table_has_model_and_probe_mean_sd_difference_and_p():
    summary = _summary()
    section = baseline_section(summary)
    assert section is not None and section.title == SECTION_TITLE
    table = _table(section)
    assert table.columns == ["split", "model AUC (mean ± sd)", "probe AUC (mean ± sd)", "difference", "p"]
    rows = {r[0]: r for r in table.rows}
    assert list(rows) == ["holdout", "test"]  # the run's order, as the report's other tables
    for split, row in rows.items():
        model, probe = summary["metrics"][split]["auc_macro"], summary["baseline"]["metrics"][split]["auc_macro"]
        assert row[1] == MeanStd(model["mean"], model["std"])
        assert row[2] == MeanStd(probe["mean"], probe["std"])
        assert row[3] == pytest.approx(model["mean"] - probe["mean"])
        assert row[4] == summary["baseline"]["paired"][split]["p_value"]
    assert "0.707 ± 0.031" in table.to_html() and "0.0123" in table.to_html()


def test_warning_when_the_model_does_not_beat_the_probe_on_test():
    warning = baseline_warning(_summary(test_beats=False, holdout_beats=True))
    assert warning is not None and warning.kind == "warning"
    assert warning.text.startswith(f"{WARNING_START} (test AUC 0.707 against the probe's 0.783, difference -0.077,")
    assert "p = 0.0123" in warning.text
    section = baseline_section(_summary(test_beats=False))
    assert section.blocks[0] is not None and section.blocks[0].kind == "warning"  # first, boxed
    assert '<p class="warning">' + WARNING_START in section.to_html()


def test_no_warning_when_it_beats_the_probe_on_test_whatever_holdout_says():
    summary = _summary(test_beats=True, holdout_beats=False)
    assert baseline_warning(summary) is None
    section = baseline_section(summary)
    assert section is not None and all(getattr(b, "kind", "") != "warning" for b in section.blocks)
    assert WARNING_START not in section.to_html()


def test_without_test_the_warning_speaks_of_holdout():
    assert baseline_warning(_summary(holdout_beats=True, splits=("holdout",))) is None
    warning = baseline_warning(_summary(holdout_beats=False, splits=("holdout",)))
    assert warning is not None and "(holdout AUC 0.710 against the probe's 0.670" in warning.text


def test_one_fold_has_no_p_value():
    summary = _summary(splits=("test",))
    summary["baseline"]["paired"]["test"]["p_value"] = None
    section = baseline_section(summary)
    assert _table(section).rows[0][4] is None
    assert "one fold, so no paired test" in baseline_warning(summary).text
    assert "–</td></tr>" in _table(section).to_html()  # the p cell, last in its row, shows an en dash


def test_no_section_without_the_block():
    assert baseline_section({"metrics": _metrics(MODEL)}) is None
    assert baseline_section({"metrics": _metrics(MODEL), "baseline": {"kind": "linear_probe", "paired": {}}}) is None
    assert baseline_warning({"metrics": _metrics(MODEL)}) is None


def _add_baseline(run: Path, *, beats: bool) -> dict:
    """summary.json gains the block a run with evaluation.baseline writes: the probe 0.1 below/above the model."""
    summary = json.loads((run / "summary.json").read_text())
    shift = -0.1 if beats else 0.1
    probe, paired = {}, {}
    for split, stats in summary["metrics"].items():
        folds = [v + shift for v in stats["auc_macro"]["folds"]]
        probe[split] = aggregate_folds([{"auc_macro": v} for v in folds])
        paired[split] = _pair(stats["auc_macro"]["folds"], folds, p=0.01, beats=beats)
    summary["baseline"] = {"kind": "linear_probe", "metrics": probe, "paired": paired}
    atomic_write_json(run / "summary.json", summary)
    return summary


def test_report_of_a_run_with_a_baseline(fabricated_run, read_table, figures_not_drawn):
    run = fabricated_run()
    summary = _add_baseline(run, beats=False)
    write_report(run)
    html = (run / "report.html").read_text()
    assert f'<h2>{SECTION_TITLE}</h2>' in html and 'href="#against-its-frozen-features"' in html
    assert html.index(SECTION_TITLE + "</h2>") > html.index("<h2>Metrics</h2>")
    assert f'<p class="warning">{WARNING_START} (test AUC' in html
    rows = {r["split"]: r for r in read_table(run, "baseline")}
    assert list(rows) == ["val", "holdout", "test"]
    for split, row in rows.items():
        model = summary["metrics"][split]["auc_macro"]
        probe = summary["baseline"]["metrics"][split]["auc_macro"]
        assert float(row["model AUC (mean ± sd) mean"]) == pytest.approx(model["mean"])
        assert float(row["model AUC (mean ± sd) std"]) == pytest.approx(model["std"])
        assert float(row["probe AUC (mean ± sd) mean"]) == pytest.approx(probe["mean"])
        assert float(row["difference"]) == pytest.approx(-0.1)
        assert float(row["p"]) == pytest.approx(0.01)


def test_report_says_nothing_when_the_model_beats_the_probe_or_there_is_no_baseline(fabricated_run, figures_not_drawn):
    beaten = fabricated_run()
    _add_baseline(beaten, beats=True)
    write_report(beaten)
    html = (beaten / "report.html").read_text()
    assert f"<h2>{SECTION_TITLE}</h2>" in html and WARNING_START not in html
    plain = fabricated_run()
    write_report(plain)
    html = (plain / "report.html").read_text()
    assert SECTION_TITLE not in html and not (plain / "tables" / "baseline.csv").exists()
