"""The documentation is kept in step with the code.

``docs/config.md`` must list exactly the keys of the schema (``medclf.config.schema_keys()``), with the
defaults the code uses, and name every registered component; ``docs/outputs.md`` must name every metric and
every file of the run folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from medclf.config import RECIPES, Config, parse_config, schema_keys

DOCS = Path(__file__).resolve().parents[1] / "docs"
CONFIG_DOC = DOCS / "config.md"
OUTPUTS_DOC = DOCS / "outputs.md"

# A table row whose first cell is one backticked dotted key: | `training.optimizer.lr` | ...
_KEY_ROW = re.compile(r"^\|\s*`([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)`\s*\|")
# A cell holding exactly one backticked value: `0.001`, `[hflip]`, `null`
_SINGLE_VALUE = re.compile(r"^`([^`]+)`$")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def key_rows(markdown: str) -> dict[str, list[list[str]]]:
    """``{dotted key: [cells of each row documenting it]}`` for every table row starting with a backticked key."""
    rows: dict[str, list[list[str]]] = {}
    for line in markdown.splitlines():
        match = _KEY_ROW.match(line.strip())
        if match:
            rows.setdefault(match.group(1), []).append(_cells(line))
    return rows


def documented_keys(markdown: str) -> set[str]:
    return set(key_rows(markdown))


@pytest.fixture(scope="module")
def config_doc() -> str:
    return CONFIG_DOC.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def outputs_doc() -> str:
    return OUTPUTS_DOC.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------- docs/config.md
def test_config_doc_lists_exactly_the_schema_keys(config_doc: str) -> None:
    documented, expected = documented_keys(config_doc), schema_keys()
    missing, extra = sorted(expected - documented), sorted(documented - expected)
    assert not missing and not extra, (
        "docs/config.md and medclf.config disagree. "
        f"Keys in the schema but not documented: {missing}. Keys documented but not in the schema: {extra}."
    )


def test_key_parser_notices_a_removed_or_invented_row(config_doc: str) -> None:
    """The check above can fail: drop one row, or add a made-up key, and the parsed set changes."""
    assert "training.optimizer.lr" in schema_keys()
    without = "\n".join(line for line in config_doc.splitlines() if not line.startswith("| `training.optimizer.lr`"))
    assert "training.optimizer.lr" not in documented_keys(without)
    assert schema_keys() - documented_keys(without) == {"training.optimizer.lr"}
    invented = config_doc + "\n| `training.optimizer.warp` | number | `1` | not a key |\n"
    assert documented_keys(invented) - schema_keys() == {"training.optimizer.warp"}
    # header and separator rows are not keys
    assert documented_keys("| key | type | default | meaning |\n|---|---|---|---|\n") == set()


def _fields_at(key: str) -> list[Any]:
    """The pydantic fields a dotted key names (several for a data.source key shared by source types)."""
    models: list[type[BaseModel]] = [Config]
    *parents, leaf = key.split(".")
    for part in parents:
        models = [sub for m in models if part in m.model_fields for sub in _models_in(m.model_fields[part].annotation)]
    return [m.model_fields[leaf] for m in models if leaf in m.model_fields]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


def test_config_doc_defaults_match_the_code(config_doc: str) -> None:
    """Every default cell holding one backticked value equals the schema's default; *required* keys are required."""
    wrong = []
    for key, rows in key_rows(config_doc).items():
        fields = _fields_at(key)
        if not fields:
            continue  # reported by test_config_doc_lists_exactly_the_schema_keys
        for cells in rows:
            if len(cells) < 4:
                wrong.append(f"{key}: row has {len(cells)} cells, expected key | type | default | meaning")
                continue
            default = cells[2]
            if default == "*required*":
                if not all(f.is_required() for f in fields):
                    wrong.append(f"{key}: documented as required but has a default")
                continue
            match = _SINGLE_VALUE.match(default)
            if not match:
                continue  # prose such as "all defaults" or "recipe"
            documented = yaml.safe_load(match.group(1))
            actual = [None if f.is_required() else _plain(f.get_default(call_default_factory=True)) for f in fields]
            if documented not in actual:
                wrong.append(f"{key}: documented default {match.group(1)!r}, the code says {actual}")
    assert not wrong, "docs/config.md defaults disagree with medclf.config:\n" + "\n".join(wrong)


def _registered_names() -> list[tuple[str, str]]:
    from medclf.data.augmentation import AUGMENTATIONS
    from medclf.data.sources import LAYOUTS
    from medclf.training.losses import LOSSES
    from medclf.training.optimizers import OPTIMIZERS
    from medclf.training.schedulers import SCHEDULERS

    names = [("optimizer", n) for n in OPTIMIZERS.names()]
    names += [("scheduler", n) for n in SCHEDULERS.names()]
    names += [("loss", n) for n in LOSSES.names()]
    names += [("augmentation preset", n) for n in AUGMENTATIONS.names()]
    names += [("data source type", n) for n in LAYOUTS.names()]
    names += [("recipe", n) for n in RECIPES]
    return names


@pytest.mark.parametrize(("kind", "name"), _registered_names())
def test_config_doc_names_every_registered_component(config_doc: str, kind: str, name: str) -> None:
    assert f"`{name}`" in config_doc, f"docs/config.md does not mention the {kind} `{name}`"


def test_config_doc_lists_every_monitorable_value(config_doc: str) -> None:
    from medclf.evaluation.metrics import MONITORABLE

    missing = [f"val_{m}" for m in MONITORABLE if f"`val_{m}`" not in config_doc]
    missing += [] if "`train_loss`" in config_doc else ["train_loss"]
    assert not missing, f"docs/config.md does not list these training.monitor values: {missing}"


def test_config_doc_example_is_a_valid_complete_config(config_doc: str) -> None:
    """The last YAML block is the complete example: it validates and writes every section."""
    blocks = re.findall(r"```yaml\n(.*?)```", config_doc, flags=re.S)
    assert blocks, "docs/config.md has no ```yaml example"
    raw = yaml.safe_load(blocks[-1])
    parse_config(raw, base_dir=CONFIG_DOC.parent, origin="the example in docs/config.md")
    assert set(raw) == set(Config.model_fields), "the example should write every top-level key"


# ------------------------------------------------------------------------------------------ docs/outputs.md
RUN_FOLDER_FILES = (
    "config.yaml",
    "run.json",
    "data.json",
    "splits.json",
    "summary.json",
    "folds.csv",
    "fold-<k>/",
    "fold-0/",
    "complete.json",
    "metrics.json",
    "history.csv",
    "predictions.csv",
    "model.safetensors",
    "model.json",
    "ensemble/",
    "gallery.npz",
)


def test_outputs_doc_names_every_summary_metric(outputs_doc: str) -> None:
    from medclf.evaluation.metrics import SUMMARY_METRICS

    per_class = ("precision/<class>", "recall/<class>", "f1/<class>", "auc/<class>")
    missing = [m for m in (*SUMMARY_METRICS, *per_class) if f"`{m}`" not in outputs_doc]
    assert not missing, f"docs/outputs.md does not name these metrics: {missing}"


def test_outputs_doc_names_every_run_folder_file(outputs_doc: str) -> None:
    from medclf.experiments.study import _RUN_FILES

    missing = [name for name in (*RUN_FOLDER_FILES, *_RUN_FILES) if name not in outputs_doc]
    assert not missing, f"docs/outputs.md does not name these run-folder files: {missing}"


def test_outputs_doc_names_every_split_and_prediction_column(outputs_doc: str) -> None:
    from medclf.experiments.study import EVAL_SPLITS

    names = ("train", *EVAL_SPLITS, "split", "id", "label", "prob_<class>", "predicted", "path")
    missing = [n for n in names if f"`{n}`" not in outputs_doc]
    assert not missing, f"docs/outputs.md does not name these splits or columns: {missing}"
