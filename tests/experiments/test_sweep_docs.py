"""docs/sweeps.md lists exactly the keys of the sweep section, with the defaults the code uses."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from medclf.experiments.sweep_config import RangeParam, RayOptions, SweepSection, sweep_keys

DOC = Path(__file__).resolve().parents[2] / "docs" / "sweeps.md"
_ROW = re.compile(r"^\|\s*`(sweep\.[A-Za-z_.<>]+)`\s*\|")


def _rows() -> dict[str, list[str]]:
    rows = {}
    for line in DOC.read_text().splitlines():
        match = _ROW.match(line)
        if match:
            rows[match.group(1)] = [c.strip() for c in line.strip().strip("|").split("|")]
    return rows


def test_sweeps_doc_lists_exactly_the_sweep_keys():
    assert set(_rows()) == sweep_keys()


def test_sweeps_doc_defaults_match_the_code():
    models = {"sweep": SweepSection, "sweep.ray": RayOptions, "sweep.space.<key>": RangeParam}
    wrong = []
    for key, cells in _rows().items():
        parent, leaf = key.rsplit(".", 1)
        field = models[parent].model_fields[leaf]
        match = re.fullmatch(r"`([^`]+)`", cells[2])
        if cells[2] == "*required*":
            ok = field.is_required()
        elif match:
            default = field.get_default(call_default_factory=True)
            ok = yaml.safe_load(match.group(1)) == (default.model_dump() if hasattr(default, "model_dump") else default)
        else:
            ok = True
        if not ok:
            wrong.append(f"{key}: {cells[2]}")
    assert not wrong, wrong
