"""Self-calibration on the real UConn red blood smear (see test_calibration_real.py for the measure)."""

from __future__ import annotations

import pytest
from real_cases import HAS_DATA, check_calibration_lowers_the_misfit

pytestmark = pytest.mark.skipif(not HAS_DATA, reason="../shared/data (real UConn measurements) not present")


@pytest.mark.slow
def test_calibration_lowers_the_misfit_at_best_focus_on_real_red_data():
    """Measured: red 0.196 -> 0.126 (−36 %). Red's two best candidates are within 5 % of each other
    in the calibration's own comparison and either can win (brightness alone measured −27 % with
    8-pass objects), so its bound keeps a margin (docs/calibration.md)."""
    check_calibration_lowers_the_misfit("red", -55.0, 0.75)
