"""``data.memory: mmap``: a fold trained from the memory-mapped decode cache scores exactly as one trained in RAM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from medclf.cli import app
from medclf.data import sources

runner = CliRunner()


def _scores(path: Path) -> dict:
    """A fold's metrics.json without its timings (the only values that differ between two identical fits)."""
    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if not k.startswith("tim")}  # timing, time_s
        return [strip(v) for v in node] if isinstance(node, list) else node

    return strip(json.loads(path.read_text()))


def test_a_fold_resumed_from_the_memory_map_scores_as_in_ram(trained_run: Path, copy_run, tiny_config: Path,
                                                             figures_not_drawn, monkeypatch):
    out = copy_run(trained_run)  # trained in RAM (tiny images: data.memory auto keeps them there)
    (out / "fold-1" / "metrics.json").unlink()  # fold 1 trains again, now from the map
    (out / "summary.json").unlink()
    loads = []
    real_load = sources.load_images

    def spy(*args, **kwargs):
        loads.append(result := real_load(*args, **kwargs))
        return result

    monkeypatch.setattr(sources, "load_images", spy)
    # a runtime key: not in the config fingerprint, so the run folder resumes under it; its cache is new (a miss)
    result = runner.invoke(app, ["run", str(tiny_config), "--out", str(out), "--quiet", "-o", "data.memory=mmap"])
    assert result.exit_code == 0, result.output
    assert "fold 0: already complete, skipped" in result.output
    assert loads and all(isinstance(x.images, np.memmap) and not x.images.flags.writeable for x in loads)
    assert _scores(out / "fold-1" / "metrics.json") == _scores(trained_run / "fold-1" / "metrics.json")
    again = json.loads((out / "summary.json").read_text())
    first = json.loads((trained_run / "summary.json").read_text())
    assert again["metrics"] == first["metrics"] and again["ensemble"] == first["ensemble"]
