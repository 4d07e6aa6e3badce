"""The layering contracts of pyproject.toml ([tool.importlinter]) hold, and a violation breaks them."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
pytestmark = pytest.mark.skipif(LINT_IMPORTS is None, reason="import-linter is not installed (pip install -e .[dev])")


def _lint_imports(*, cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    """``lint-imports`` with the contracts of ``cwd/pyproject.toml``, importing medclf from ``pythonpath``."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True)


def test_the_import_contracts_are_kept():
    result = _lint_imports(cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_contracts(tmp_path: Path):
    shutil.copytree(ROOT / "src" / "medclf", tmp_path / "medclf", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    model = tmp_path / "medclf" / "config" / "model.py"
    model.write_text(model.read_text() + "\nfrom medclf.training.losses import LOSSES  # noqa: E402\n")
    result = _lint_imports(cwd=tmp_path, pythonpath=tmp_path)
    assert result.returncode == 1
    assert "medclf.config is not allowed to import medclf.training" in result.stdout
    assert "medclf.config is not allowed to import torch" in result.stdout
