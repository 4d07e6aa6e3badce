"""write_report on fabricated run folders: the numbers of its tables against the run's JSON, and its parts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from medclf.errors import RunFolderError
from medclf.evaluation.multilabel import MULTILABEL_SUMMARY
from medclf.reporting import write_report
from medclf.reporting.intervals import ensemble_intervals
from medclf.reporting.rundata import read_run

HEADLINE = ["accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "auc_macro", "loss"]


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _f(text: str) -> float:
    return float(text) if text != "" else float("nan")


def test_metric_tables_match_metrics_json_and_summary(reported_run, read_table):
    run = reported_run
    summary = _json(run / "summary.json")
    folds = [_json(run / f"fold-{k}" / "metrics.json") for k in range(3)]
    for split in ("val", "holdout", "test"):
        rows = {r["metric"]: r for r in read_table(run, f"metrics-{split}")}
        assert list(rows) == HEADLINE
        for name, row in rows.items():
            for k in range(3):
                assert _f(row[f"fold {k}"]) == pytest.approx(folds[k]["metrics"][split][name])
            s = summary["metrics"][split][name]
            assert _f(row["mean ± std mean"]) == pytest.approx(s["mean"])
            assert _f(row["mean ± std std"]) == pytest.approx(s["std"])
            ref = stats.t.interval(0.95, df=2, loc=np.mean(s["folds"]), scale=stats.sem(s["folds"]))
            if name != "loss":  # bounded by 0 and 1: the interval is clipped to them
                ref = np.clip(ref, 0.0, 1.0)
            assert _f(row["95 % CI low"]) == pytest.approx(ref[0])
            assert _f(row["95 % CI high"]) == pytest.approx(ref[1])
    # the HTML shows the same numbers with three decimals, right-aligned
    html = (run / "report.html").read_text()
    acc = summary["metrics"]["holdout"]["accuracy"]
    assert f'<td class="num">{acc["mean"]:.3f} ± {acc["std"]:.3f}</td>' in html


def test_ensemble_table_has_the_summary_values_and_bootstrap_intervals(reported_run, read_table):
    run = reported_run
    summary = _json(run / "summary.json")
    rows = {r["metric"]: r for r in read_table(run, "metrics-ensemble-test")}
    data = read_run(run)
    intervals = ensemble_intervals(data.ensemble, data.classes, names=HEADLINE)
    for name in HEADLINE:
        assert _f(rows[name]["value"]) == pytest.approx(summary["ensemble"]["test"][name])
        low, high = intervals[name]
        assert _f(rows[name]["95 % CI low"]) == pytest.approx(low) and _f(rows[name]["95 % CI high"]) == pytest.approx(high)
        if name != "loss":
            assert low <= summary["ensemble"]["test"][name] + 1e-9 <= high + 2e-9


def test_summary_and_per_class_tables_match_summary_json(reported_run, read_table):
    run = reported_run
    summary = _json(run / "summary.json")
    rows = {r["metric"]: r for r in read_table(run, "summary")}
    assert _f(rows["auc_macro"]["test mean"]) == pytest.approx(summary["metrics"]["test"]["auc_macro"]["mean"])
    assert _f(rows["loss"]["ensemble test"]) == pytest.approx(summary["ensemble"]["test"]["loss"])
    per_class = {r["class"]: r for r in read_table(run, "per-class-holdout")}
    for c in ("blank", "circle", "square"):
        assert _f(per_class[c]["F1 mean"]) == pytest.approx(summary["metrics"]["holdout"][f"f1/{c}"]["mean"])
        assert _f(per_class[c]["AUC std"]) == pytest.approx(summary["metrics"]["holdout"][f"auc/{c}"]["std"])


def test_classification_report_matches_scikit_learn_on_pooled_holdout(reported_run, read_table):
    from sklearn.metrics import classification_report

    run = reported_run
    data = read_run(run)
    pooled = data.pooled("holdout")
    ref = classification_report(pooled.labels, pooled.predicted, labels=data.classes, output_dict=True, zero_division=0)
    rows = {r["class"]: r for r in read_table(run, "classification-report-holdout")}
    for c in data.classes + ["macro avg", "weighted avg"]:
        assert _f(rows[c]["precision"]) == pytest.approx(ref[c]["precision"])
        assert _f(rows[c]["recall"]) == pytest.approx(ref[c]["recall"])
        assert _f(rows[c]["F1"]) == pytest.approx(ref[c]["f1-score"])
        assert int(rows[c]["support"]) == ref[c]["support"]
    assert _f(rows["accuracy"]["F1"]) == pytest.approx(ref["accuracy"])
    # each fold's holdout rows counted once: 3 folds x 24 images
    assert int(rows["macro avg"]["support"]) == 72


def test_confusion_timing_and_calibration_tables(reported_run, read_table):
    run = reported_run
    folds = [_json(run / f"fold-{k}" / "metrics.json") for k in range(3)]
    summed = np.sum([f["confusion"]["holdout"] for f in folds], axis=0)
    rows = read_table(run, "confusion-holdout-summed")
    assert [[int(v) for k, v in r.items() if k.startswith("pred ")] for r in rows] == summed.tolist()
    timing = {r["fold"]: r for r in read_table(run, "timing")}
    assert _f(timing["fold 2"]["train s"]) == 12.0 and timing["fold 0"]["early stop"] == "4"
    assert timing["fold 1"]["early stop"] == "" and _f(timing["total"]["train s"]) == 33.0
    ece = read_table(run, "calibration-ece")
    assert [r["predictions"] for r in ece][:2] == ["holdout, all folds pooled", "test, fold ensemble"]
    assert all(0 <= _f(r["ECE"]) <= 1 for r in ece)


def test_report_has_every_section_figure_and_table_and_stays_offline(reported_run):
    run = reported_run
    path = run / "report.html"
    html = path.read_text()
    for heading in ("Overview", "Data", "Metrics", "Classification report", "Confusion matrices",
                    "ROC and precision-recall curves", "Training curves", "Calibration", "Misclassified images",
                    "Timing and model", "Configuration", "Environment"):
        assert re.search(rf'<h2>{re.escape(heading)}</h2>', html), heading
        assert f'href="#{heading.lower().replace(" ", "-")}"' in html  # in the table of contents
    assert "Patient level" not in html and "Multi-label" not in html
    figures = {p.name for p in (run / "figures").glob("*.png")}
    assert {"roc-holdout.png", "roc-test.png", "pr-test.png", "calibration.png", "training-fold-0.png",
            "training-all-folds.png", "confusion-holdout-fold-2.png", "confusion-test-ensemble.png",
            "overview-metrics.png"} <= figures
    # every figure is embedded, every table saved twice
    assert html.count("data:image/png;base64,") == len(figures)
    for csv_file in (run / "tables").glob("*.csv"):
        assert (run / "tables" / f"{csv_file.stem}.md").exists()
    # nothing that a browser would fetch
    assert not re.search(r'(src|href)="(?!data:|#)', html.replace('href="data:,"', ""))
    assert "<script" not in html and "@import" not in html and "url(" not in html
    # early stop and kept epoch are marked
    assert "early stop at epoch 4" in html and "kept epoch 3" in html


def test_gallery_says_why_when_the_run_kept_no_images(fabricated_run, read_table, figures_not_drawn):
    run = fabricated_run(gallery=False)
    html = write_report(run).read_text()
    assert "The images are not shown: the run folder has no gallery.npz" in html
    assert not (run / "figures" / "misclassified.png").exists()
    rows = read_table(run, "misclassified")
    assert rows and all(r["true"] != r["predicted"] for r in rows)
    probs = [_f(r["probability of the prediction"]) for r in rows]
    assert probs == sorted(probs, reverse=True)


def test_gallery_shows_the_images_the_run_kept(reported_run, read_table):
    from medclf.runfolder import read_gallery

    run = reported_run
    html = (run / "report.html").read_text()
    assert "The images are not shown" not in html
    assert (run / "figures" / "misclassified.png").exists()
    rows = read_table(run, "misclassified")
    assert [r["id"] for r in rows] == list(read_gallery(run))  # the run kept exactly the rows the report shows
    probs = [_f(r["probability of the prediction"]) for r in rows]
    assert probs == sorted(probs, reverse=True) and all(r["true"] != r["predicted"] for r in rows)


def test_gallery_of_an_altered_file_says_why(fabricated_run, figures_not_drawn):
    run = fabricated_run()
    (run / "gallery.npz").write_bytes(b"not a zip")
    html = write_report(run).read_text()
    assert "The images are not shown:" in html and "gallery.npz cannot be read" in html


def test_patient_and_multilabel_sections_appear_when_the_run_has_them(patient_report, fabricated_run, read_table):
    run = patient_report
    html = (run / "report.html").read_text()
    assert "<h2>Patient level</h2>" in html
    rows = {r["metric"]: r for r in read_table(run, "patient-metrics-holdout")}
    assert _f(rows["accuracy"]["fold 2"]) == pytest.approx(0.7)
    assert _f(rows["f1_macro"]["mean ± std mean"]) == pytest.approx(0.45)
    assert (run / "figures" / "patient-confusion-holdout.png").exists()

    ml = fabricated_run(multilabel=True)
    html = write_report(ml).read_text()
    assert "<h2>Multi-label</h2>" in html and (ml / "figures" / "label-cooccurrence.png").exists()
    summary = _json(ml / "summary.json")
    rows = {r["metric"]: r for r in read_table(ml, "metrics-test")}
    assert list(rows) == list(MULTILABEL_SUMMARY)  # every average the evaluation computes, in its order
    assert _f(rows["hamming_loss"]["mean ± std mean"]) == pytest.approx(summary["metrics"]["test"]["hamming_loss"]["mean"])
    per_label = {r["label"]: r for r in read_table(ml, "per-class-test")}
    assert set(per_label["blank"]) >= {"threshold mean", "support mean"}
    tp_rows = read_table(ml, "confusion-test-per-label")
    assert [r["label"] for r in tp_rows] == ["blank", "circle", "square"]
    ens = {r["metric"]: r for r in read_table(ml, "metrics-ensemble-test")}
    assert _f(ens["exact_match"]["value"]) == pytest.approx(summary["ensemble"]["test"]["exact_match"])
    assert list(ens) == list(MULTILABEL_SUMMARY)
    for name, row in ens.items():  # auc_macro, loss, f1_weighted... were – before they had fast forms
        assert row["95 % CI low"] != "" and _f(row["95 % CI low"]) <= _f(row["95 % CI high"]), name


def _section(html: str, anchor: str) -> str:
    """The HTML of one section of the page, from its opening tag to the next section."""
    start = html.index(f'<section id="{anchor}">')
    return html[start:html.index("<section", start + 1)]


def test_audit_shows_each_fold_and_warns_when_a_fold_leaks(fabricated_run, read_table, real_audit, figures_not_drawn):
    run = fabricated_run(stopped=False)
    audit = real_audit(policy="warn")
    (run / "audit.json").write_text(json.dumps(audit))
    (run / "skipped.csv").write_text("path,reason\nbad.png,cannot decode\n")
    html = write_report(run).read_text()
    assert "Skipped images (1)" in html
    section = _section(html, "leakage-audit")
    folds = read_table(run, "audit-folds")
    assert [[r["fold"], r["exact"], r["near"], r["patient"]] for r in folds] == [
        [f"fold {f['fold']}", str(f["exact"]), str(f["near"]), str(f["patient"])] for f in audit["folds"]
    ] + [["total", "1", "1", "1"]]
    warning = re.search(r'<p class="warning">(.*?)</p>', section).group(1)
    assert "in fold 0 (1 of 2 folds)" in warning and "(1 exact, 1 near duplicate)" in warning
    assert "scores are inflated" in warning and "audit.leakage is warn" in warning
    checks = {r["check"]: r for r in read_table(run, "audit")}
    assert checks["exact duplicates"]["count"] == str(audit["exact_duplicates"]["count"])
    near = audit["near_duplicates"]
    assert checks["near-duplicate pairs"]["count"] == "1" == str(near["count"])
    assert checks["near-duplicate pairs"]["across splits"] == str(near["across"])
    assert "each pair on its own; 2 images in a pair" in checks["near-duplicate pairs"]["how"]
    assert [[r["image"], r["split"], r["near duplicate"], r["its split"]] for r in read_table(run, "audit-near-pairs")] \
        == [["img1", "train", "img10", "test"]]
    assert checks["patients in several splits"]["count"] == "1"
    assert checks["patients in several splits"]["how"] == "of 11 patients"
    assert f"at most {near['max_distance']} of 64 bits apart" in checks["near-duplicate pairs"]["how"]
    # values in words, not dumps of Python objects
    for raw in ("True", "None", "{}", "[]", "timing", "enabled:", "n_patients"):
        assert raw not in section, raw
    assert "<dt>audit.leakage</dt><dd>warn</dd>" in section and "<dt>images per split</dt><dd>test 2, train 10</dd>" in section
    assert "early stop at epoch" not in html  # old runs without stopped_epoch


def test_audit_after_drop_duplicates_and_without_leaks(fabricated_run, read_table, real_audit, figures_not_drawn):
    run = fabricated_run()
    (run / "audit.json").write_text(json.dumps(real_audit(policy="drop_duplicates")))
    section = _section(write_report(run).read_text(), "leakage-audit")
    assert "2 duplicated images removed" in section and "images of shared patients were kept" in section
    assert [r["dropped"] for r in read_table(run, "audit-folds")] == ["2", "0", "2"]

    (run / "audit.json").write_text(json.dumps(real_audit(leak=False)))
    section = _section(write_report(run).read_text(), "leakage-audit")
    assert 'class="warning"' not in section and "inflated" not in section
    assert [r["exact"] for r in read_table(run, "audit-folds")] == ["0", "0", "0"]


def test_rewriting_removes_figures_the_report_no_longer_has(fabricated_run, figures_not_drawn):
    run = fabricated_run()
    (run / "figures").mkdir()
    (run / "figures" / "confusion-holdout-fold-7.png").write_bytes(b"old")
    (run / "figures" / "mine.txt").write_text("kept")
    write_report(run)
    assert not (run / "figures" / "confusion-holdout-fold-7.png").exists()
    assert (run / "figures" / "mine.txt").exists()


def test_not_a_run_folder_is_a_clear_error(tmp_path: Path, fabricated_run):
    with pytest.raises(RunFolderError, match="does not exist or is not a folder"):
        write_report(tmp_path / "missing")
    run = fabricated_run()
    (run / "summary.json").unlink()
    with pytest.raises(RunFolderError, match=r"not a finished run folder: summary.json missing"):
        write_report(run)


def test_a_damaged_or_edited_config_yaml_is_refused_by_name(fabricated_run, figures_not_drawn):
    run = fabricated_run()
    text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(text[: len(text) // 2])  # truncated: still YAML, no longer this run's config
    with pytest.raises(RunFolderError, match=r"config.yaml (cannot be read as the run's config|is not the config)"):
        write_report(run)
    (run / "config.yaml").write_text("name: !!python/object/apply:os.system [echo hi]\n")  # a tag: never executed
    with pytest.raises(RunFolderError, match=r"config.yaml cannot be read as the run's config"):
        write_report(run)
    (run / "config.yaml").write_text(text.replace("epochs: 4", "epochs: 5"))  # valid, but not what ran
    with pytest.raises(RunFolderError, match=r"config.yaml is not the config this run was made with"):
        write_report(run)
    (run / "config.yaml").write_text(text)
    write_report(run)


def test_environment_is_the_runs_and_old_runs_say_the_versions_are_the_reports(reported_run, fabricated_run, read_table,
                                                                             figures_not_drawn):
    run = reported_run
    recorded = _json(run / "summary.json")["environment"]
    rows = {r[""]: r for r in read_table(run, "environment")}
    assert rows["torch"]["value"] == "9.9.9" and rows["torch"]["source"] == "run"  # the run's, not this one's
    for name in ("python", "platform", "torchvision", "timm", "numpy", "scikit-learn", "medclf", "device"):
        assert rows[name]["value"] == str(recorded[name]) and rows[name]["source"] == "run", name
    assert rows["precision"]["value"] == "fp32" and rows["medclf (this report)"]["source"] == "report"

    old = fabricated_run(environment=False)
    html = write_report(old).read_text()
    rows = {r[""]: r for r in read_table(old, "environment")}
    assert rows["torch"]["source"] == "report" and rows["medclf (run)"]["value"] == "0.1.0"
    assert "predates the recorded environment" in html


def _fold_predictions(run: Path, k: int, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(y, probs, classes) of a fold's predictions.csv, read here without the reporting code."""
    import csv

    classes = _json(run / "data.json")["classes"]
    with open(run / f"fold-{k}" / "predictions.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == split]
    y = np.array([classes.index(r["label"]) for r in rows])
    return y, np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows]), classes


def test_data_counts_and_model_tables_match_data_and_summary_json(reported_run, read_table):
    run = reported_run
    data = _json(run / "data.json")
    rows = {r["class"]: r for r in read_table(run, "data-counts")}
    for c in data["classes"]:
        for split, counts in data["counts"].items():
            assert int(rows[c][split]) == counts[c], (c, split)
        assert int(rows[c]["total"]) == sum(counts[c] for counts in data["counts"].values())
    assert int(rows["total"]["total"]) == data["n_images"] == sum(sum(v.values()) for v in data["counts"].values())

    model = _json(run / "summary.json")["model"]
    rows = {r[""]: r["value"] for r in read_table(run, "model")}
    assert rows["architecture"] == model["architecture"]
    assert int(rows["parameters"]) == model["parameters"]["total"]
    assert int(rows["trainable parameters"]) == model["parameters"]["trainable"]
    assert _f(rows["model size (MB)"]) == pytest.approx(model["parameters"]["size_mb"])
    html = (run / "report.html").read_text()
    assert '<th scope="row">parameters</th><td class="num">123,456</td>' in html  # right-aligned beside a name
    assert '<th scope="row">architecture</th><td>test_resnet</td>' in html


def test_ece_matches_the_evaluation_function_on_the_runs_predictions(reported_run, read_table):
    from medclf.evaluation.calibration import expected_calibration_error

    run = reported_run
    rows = {r["predictions"]: r for r in read_table(run, "calibration-ece")}
    pooled_conf, pooled_right = [], []
    for k in range(3):
        y, probs, _ = _fold_predictions(run, k, "holdout")
        conf, right = probs.max(axis=1), (probs.argmax(axis=1) == y).astype(float)
        assert _f(rows[f"holdout, fold {k}"]["ECE"]) == pytest.approx(expected_calibration_error(conf, right))
        assert int(rows[f"holdout, fold {k}"]["n"]) == len(y)
        pooled_conf.append(conf)
        pooled_right.append(right)
    conf, right = np.concatenate(pooled_conf), np.concatenate(pooled_right)
    pooled = rows["holdout, all folds pooled"]
    assert _f(pooled["ECE"]) == pytest.approx(expected_calibration_error(conf, right))
    assert _f(pooled["mean confidence"]) == pytest.approx(conf.mean()) and _f(pooled["accuracy"]) == pytest.approx(right.mean())


def test_roc_panels_show_the_aucs_of_roc_auc_score(reported_run):
    from sklearn.metrics import roc_auc_score

    from medclf.reporting.run_figures import curve_panels

    run = reported_run
    roc, pr = curve_panels(read_run(run), "holdout")
    assert [p.title for p in roc] == ["blank vs rest", "circle vs rest", "square vs rest"] and len(pr) == 3
    for c, panel in enumerate(roc):
        folds = {s.label.split(" (")[0]: s for s in panel.series if s.label and s.label.startswith("fold ")}
        aucs = []
        for k in range(3):
            y, probs, _ = _fold_predictions(run, k, "holdout")
            aucs.append(roc_auc_score(y == c, probs[:, c]))
            series = folds[f"fold {k}"]
            assert series.label == f"fold {k} (AUC {aucs[-1]:.3f})"
            assert np.trapezoid(series.y, series.x) == pytest.approx(aucs[-1])  # the curve drawn is that ROC
        (mean,) = [s for s in panel.series if s.label and s.label.startswith("mean")]
        assert mean.label == f"mean (AUC {np.mean(aucs):.3f} ± {np.std(aucs, ddof=1):.3f})"


def test_patient_counts_have_no_decimals(patient_report):
    md = (patient_report / "tables" / "patient-metrics-holdout.md").read_text()
    (row,) = [line for line in md.splitlines() if line.startswith("| n_patients ")]
    assert row == "| n_patients | 8 | 8 | 8 | 8 ± 0.0 | – |"


def test_audit_without_folds_counts_exact_repeats_and_near_pairs_apart(real_audit):
    from medclf.reporting.run_tables import audit_warning

    audit = real_audit(policy="warn")
    del audit["folds"]  # as `medclf audit` writes it when cv cannot make folds
    text = audit_warning(audit).text
    # img4 copies img0 inside train; img10 (test) is a near duplicate of img1 (train); patient p5 in both
    assert text.startswith("Across splits: 0 exact duplicates of an image of another split, 1 near-duplicate pair "
                           "and 1 patient with images in several splits.")
    audit["near_duplicates"] |= {"across": 0}
    audit["exact_duplicates"] |= {"across": 0}
    audit["patient_overlap"] |= {"count": 0}
    assert audit_warning(audit) is None
