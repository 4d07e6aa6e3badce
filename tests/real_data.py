"""The real data beside the repository (``../shared/data``): every developer machine and CI run has it, a user's
clone may not, and the tests that read it skip cleanly then."""

from __future__ import annotations

from pathlib import Path

import pytest

REAL_NPZ = Path(__file__).resolve().parents[2] / "shared" / "data" / "pneumoniamnist.npz"


def skip_if_it_reads_absent_real_data(config: Path) -> None:
    """Skip the calling test when the config (or sweep) file ``config`` names the real npz and it is not here: a
    config validates its source path before anything can replace it."""
    if REAL_NPZ.name in config.read_text() and not REAL_NPZ.exists():
        pytest.skip(f"{config.name} reads the real data, not found at {REAL_NPZ}")
