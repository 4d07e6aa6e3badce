"""The real ``medclf run`` on a damaged decode cache and on images far smaller than ``data.image_size``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from medclf.cli import app
from medclf.config import load_config
from medclf.data import load_dataset


def test_a_zeroed_cache_entry_is_named_and_small_images_are_counted(tiny_config: Path, tmp_path: Path):
    config = yaml.safe_load(tiny_config.read_text())
    config["data"]["image_size"] = 40  # the 16 px images are enlarged 2.5x: every one of them is "small"
    config["training"]["epochs"] = 1
    config["cv"]["mode"] = "holdout"  # one fold: what is checked is the data, not the folds
    del config["cv"]["n_folds"]  # holdout mode reads no n_folds (validate warns about a written one)
    tiny_config.write_text(yaml.safe_dump(config))
    clean = load_dataset(load_config(tiny_config).data)  # fills the cache the run will read
    # the same shape, all zeros: before checksums, this was trained on without a word
    (entry,) = Path(config["data"]["cache_dir"]).glob("*.npy")
    np.save(entry, np.zeros_like(np.load(entry)))

    out = tmp_path / "run"
    # in-process: the warning is caught here; `medclf` prints it as one line on stderr (tests/reliability)
    with pytest.warns(RuntimeWarning, match=f"{entry.name} is damaged: 42 of 42 cached images fail their pixel "
                                            "checksum"):
        done = CliRunner().invoke(app, ["run", str(tiny_config), "--out", str(out), "--quiet"])
    assert done.exit_code == 0, done.output
    data = json.loads((out / "data.json").read_text())
    assert data["fingerprint"] == clean.fingerprint  # trained on the clean pixels
    assert (data["small_images"]["count"], data["small_images"]["factor"]) == (42, 2.0)
    assert data["small_images"]["first"] == clean.small_images[:10] and len(clean.small_images) == 42
    assert "warning: 42 images are enlarged more than 2x to data.image_size" in " ".join(done.stdout.split())
