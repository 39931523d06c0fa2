"""Fixtures of the calibration tests (cases in calib_cases.py)."""

import pytest

from calib_cases import miscalibrated


@pytest.fixture(scope="session")
def acceptance_case():
    return miscalibrated()
