"""Self-calibration on the real UConn blood smears (../shared/data; skipped when absent).

The issue's measure: the relative amplitude misfit at best focus of a 25-pass conventional
reconstruction with pupil recovery, planes every 2.5 µm around the stated depth, on the 48² raw
crop at (32, 32); calibrated data as ``Calibration.apply`` gives them. The issue searched ±15 µm;
the misfit is flat over that range on both files (green 0.173..0.183 nominal, 0.106..0.111
calibrated; red 0.196..0.200 and 0.125..0.127, measured 2026-12), so ±5 µm (5 planes instead of
13) gives the same verdict at 40 % of the cost: green −41 % (−39 % over ±15), red −36 %.
"""

from __future__ import annotations

import pytest
from real_cases import HAS_DATA, check_calibration_lowers_the_misfit

pytestmark = pytest.mark.skipif(not HAS_DATA, reason="../shared/data (real UConn measurements) not present")


@pytest.mark.slow
def test_calibration_lowers_the_misfit_at_best_focus_on_real_green_data():
    """The issue's target is ≥ 30 % lower on both files (red: test_calibration_real_red.py).
    Measured (3-bin pupil-edge band): green 0.173 -> 0.106 (−39 %)."""
    check_calibration_lowers_the_misfit("green", 10.0, 0.70)
