"""The shipped configs: every example validates, and the packaged demo runs (shrunk to seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medclf.cli import app
from medclf.config import load_config
from real_data import skip_if_it_reads_absent_real_data

# examples/sweeps/ holds sweep files (a config plus a sweep: section): tests/e2e/test_sweep_examples.py checks them
EXAMPLES = sorted(p for p in (Path(__file__).resolve().parents[2] / "examples").rglob("*.yaml") if p.parent.name != "sweeps")
runner = CliRunner()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_validates(path: Path):
    assert load_config(path).name


def test_examples_demo_is_the_packaged_demo():
    from importlib.resources import files

    packaged = Path(str(files("medclf") / "resources" / "demo.yaml"))
    assert (Path(__file__).resolve().parents[2] / "examples" / "demo.yaml").read_text() == packaged.read_text()


def test_demo_command_runs_the_packaged_config(tmp_path: Path):
    shrink = ["-o", "data.source.n_patients=32", "-o", "data.source.slices_per_patient=3", "-o", "cv.n_folds=2",
              "-o", "cv.val_fraction=0.5",
              "-o", "training.epochs=1", "-o", "data.image_size=32", "-o", "data.source.image_size=32"]
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--quiet", *shrink])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["name"] == "demo"
    assert summary["data"]["n_patients"] == 32 and summary["data"]["n_images"] == 96
    assert len(summary["metrics"]["holdout"]["accuracy"]["folds"]) == 2
    assert "test" in summary["ensemble"]


def _tiny(raw: dict) -> dict:
    """The example's study on a few dozen synthetic images, one epoch (one per stage), one holdout-mode fold.

    What is checked is that the example's model, loss, optimizer and stages build and train; the folds and the
    ensemble are the same code for every example and are run by the demo test and tests/e2e/test_cli.py.
    """
    raw = dict(raw)
    size = 64 if raw.get("model", {}).get("name") == "layers" else 32  # the radiograph nets need 64 px
    # the synthetic phantoms have their own classes: an example's class order or positive class cannot apply
    data = {k: v for k, v in raw["data"].items() if k not in ("classes", "positive_class")}
    raw["data"] = dict(data, image_size=size,
                       source={"type": "synthetic", "n_patients": 40, "slices_per_patient": 1, "image_size": 32})
    training = dict(raw.get("training", {}), epochs=1, batch_size=16)
    if training.get("stages"):
        training["stages"] = [dict(stage, epochs=1) for stage in training["stages"]]
    raw["training"] = training
    raw["cv"] = {"mode": "holdout", "val_fraction": 0.25}
    return raw


EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
STUDIES = [p for p in EXAMPLES if "sweeps" not in p.relative_to(EXAMPLES_DIR).parts]


@pytest.mark.parametrize("path", [p for p in STUDIES if p.name != "demo.yaml"], ids=lambda p: p.stem)
def test_every_example_trains_for_one_epoch_on_tiny_synthetic_data(path: Path, tmp_path: Path):
    import yaml

    from medclf.config import parse_config
    from medclf.experiments import run_study

    config = parse_config(_tiny(yaml.safe_load(path.read_text())), base_dir=path.parent, origin=str(path))
    summary = run_study(config, tmp_path / "run")
    assert len(summary["metrics"]["val"]["accuracy"]["folds"]) == 1
    fold = json.loads((tmp_path / "run" / "fold-0" / "metrics.json").read_text())
    assert fold["epochs_run"] == max(1, len(config.training.stages))
    assert fold["parameters"]["total"] > 0


SWEEPS = sorted((EXAMPLES_DIR / "sweeps").glob("*.yaml"))
# Sweeps whose tiny baseline has a model, a training section and a data section that a study example above
# already trains (checked by the test after next): training them again would exercise no other code.
TRAINED_BY_A_STUDY = {"batch_size", "freeze", "imbalance", "losses", "search_optuna"}


def _tiny_baseline(path: Path):
    from medclf.config import parse_config
    from medclf.experiments.sweep_config import apply_dotted, load_sweep

    plan = load_sweep(path)
    overrides = next((v.overrides for v in plan.variants if v.name == plan.baseline), {})
    return parse_config(_tiny(apply_dotted(plan.base, overrides)), base_dir=plan.base_dir, origin=str(path))


@pytest.mark.parametrize("path", [p for p in SWEEPS if p.stem not in TRAINED_BY_A_STUDY], ids=lambda p: p.stem)
def test_every_sweep_baseline_trains_for_one_epoch_on_tiny_synthetic_data(path: Path, tmp_path: Path):
    """Each sweep's baseline variant as a study (every variant is validated and built in test_sweep_examples.py)."""
    from medclf.experiments import run_study

    skip_if_it_reads_absent_real_data(path)  # load_sweep checks the path before the tiny source replaces it
    summary = run_study(_tiny_baseline(path), tmp_path / "run")
    assert len(summary["metrics"]["val"]["accuracy"]["folds"]) == 1


def _sections(config) -> tuple[str, str, str]:
    """What a tiny study's training exercises: its model, its training section, its data section (source aside)."""
    data = config.data.model_dump(mode="json", exclude={"source", "cache_dir"})
    return config.model.model_dump_json(), config.training.model_dump_json(), json.dumps(data, sort_keys=True)


def test_the_sweep_baselines_not_trained_have_every_section_trained_by_a_study_example():
    import yaml

    from medclf.config import parse_config

    trained = [set(), set(), set()]
    for path in STUDIES:
        if path.name != "demo.yaml":
            config = parse_config(_tiny(yaml.safe_load(path.read_text())), base_dir=path.parent, origin=str(path))
            for seen, section in zip(trained, _sections(config)):
                seen.add(section)
    names = {p.stem for p in SWEEPS}
    assert TRAINED_BY_A_STUDY <= names
    for path in SWEEPS:
        if path.stem in TRAINED_BY_A_STUDY:
            skip_if_it_reads_absent_real_data(path)
            missing = [name for name, seen, section in zip(("model", "training", "data"), trained,
                                                             _sections(_tiny_baseline(path))) if section not in seen]
            assert missing == [], f"{path.name}: no study example trains its {missing}; train it (drop it from the set)"
