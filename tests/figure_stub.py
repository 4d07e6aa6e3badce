"""Report figures built but not drawn, for tests of a report's tables, text and files (not of its pictures).

Drawing is most of a report's time (about 8 of 10 s for a tiny run). With :func:`skip_drawing` every figure is
still built from the run's data (its panels, lines, bars and images: the code that can fail on a run's
contents), and the report still decides which figures it has and writes each one; only matplotlib's draw and the
PNG encoding are left out, so each PNG is the same white pixel. Every kind of figure is still drawn for real
elsewhere: ``reported_run`` and ``patient_report`` (tests/reporting/conftest.py), the multi-label report of
tests/reporting/test_run_report.py, the session runs' own reports (``trained_run``, ``binary_run``), and the
reliability suite, which compares figures byte for byte.
"""

from __future__ import annotations

import io

import pytest


def skip_drawing(patch: pytest.MonkeyPatch) -> None:
    """Replace ``medclf.reporting.figures._render`` (draw + PNG) for as long as ``patch`` is active."""
    from PIL import Image

    from medclf.reporting import figures

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), "white").save(buffer, format="PNG")
    pixel = buffer.getvalue()

    def render(fig, name: str, caption: str) -> figures.Figure:  # fig.clear() too would re-create each axes
        return figures.Figure(name=name, caption=caption, png=pixel)

    patch.setattr(figures, "_render", render)
