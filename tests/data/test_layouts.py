"""Tests for medclf.data.layouts: the registry is filled in one place, with each layout's facts, and no module of
medclf.data reaches into another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import medclf.data
from medclf.data import LAYOUTS, LayoutInfo
from medclf.data.layouts import folder, manifest

DATA_PACKAGE = Path(medclf.data.__file__).parent


def test_every_layout_is_registered_with_its_facts() -> None:
    assert LAYOUTS.names() == ["csv", "folder", "folds", "npz", "patients", "splits", "synthetic"]
    assert all(isinstance(LAYOUTS.get(name), LayoutInfo) for name in LAYOUTS)
    assert LAYOUTS.get("folder").list_source is folder.folder_layout
    assert LAYOUTS.get("csv").list_source is manifest.csv_layout
    depths = {name: LAYOUTS.get(name).patient_folder_depth for name in LAYOUTS}
    assert depths == {"csv": None, "folder": 1, "folds": 3, "npz": None, "patients": None, "splits": 2,
                      "synthetic": None}


def test_no_module_imports_another_modules_private_names() -> None:
    private = []
    for path in sorted(DATA_PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("medclf"):
                private += [f"{path.relative_to(DATA_PACKAGE)}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert private == []


def test_layout_modules_do_not_register_themselves() -> None:
    """Registration happens in medclf/data/layouts/__init__.py only, never as a side effect of importing a module."""
    registering = [
        path.name for path in sorted((DATA_PACKAGE / "layouts").glob("*.py"))
        if path.name != "__init__.py" and "LAYOUTS" in path.read_text(encoding="utf-8")
    ]
    assert registering == []
