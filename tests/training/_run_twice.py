"""``medclf ARGS...`` twice in this process (a run, then its resume): one torchrun launch covers both.

tests/training/test_ddp.py starts it under torchrun; two launches would import torch and timm twice as often. The
reports' figures are built but not drawn (tests/figure_stub.py): the report is still written, by rank 0 alone, and
drawing them twice was a third of the test's time.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/, for figure_stub

from figure_stub import skip_drawing  # noqa: E402
from medclf.cli import main  # noqa: E402

skip_drawing(pytest.MonkeyPatch())
for _ in range(2):
    try:
        main()  # reads sys.argv, as the console script does
    except SystemExit as done:  # typer ends every command with one
        if done.code:
            raise
