"""The bin polish (calib/bin_polish.py): an LED whose NA is a fraction of a bin off, across a step of
its hard-edged pupil, costs the reconstruction dB; the polish moves it back to the right pattern."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from calib_cases import miscalibrated
from napari_fpminr.calib.bin_polish import polish_on_bins
from napari_fpminr.calib.fit import quick_field
from napari_fpminr.recon.conventional import reconstruct_stack
from napari_fpminr.recon.metrics import psnr_scaled


def _psnr(raw, na, truth) -> float:
    data = raw.with_optics(na_illum=na).normalized()
    return psnr_scaled(reconstruct_stack(data, [0.0], pupil_update=True).amplitude[0], truth)


@pytest.fixture(scope="module")
def corner():
    """The capture-range corner (2 mm, −6°, ×1.06) with the true board and brightness."""
    _, _, _, sim = miscalibrated(48, shift_mm=2.0, rotation_deg=-6.0, height_scale=1.06, brightness_spread=0.0)
    return replace(sim.raw, meta={"format": "test"}), sim.truth.amplitude[0]


def test_one_led_across_a_bin_edge_is_moved_back(corner):
    raw, truth = corner
    na_true = raw.optics.na_illum
    exact = _psnr(raw, na_true, truth)
    # LED 4 (NA 0.232 of 0.25): +0.0006 NA in y moves a strong bin across its pupil's edge
    wrong = na_true.copy()
    wrong[4, 1] += 0.0006
    damaged = _psnr(raw, wrong, truth)
    assert damaged < exact - 2.0  # the step is real: dB lost for 1/50 of a bin
    data = raw.with_optics(na_illum=wrong).normalized()
    field, pupil = quick_field(data, 0.0, iterations=10, pupil_update=True, device="cpu")
    na, moved = polish_on_bins(field, pupil, 0.0, data, wrong)
    assert moved[4]
    assert abs(na[4, 1] - na_true[4, 1]) < 0.5 * 0.0315  # within half a bin of the truth
    assert _psnr(raw, na, truth) > exact - 0.3


def test_exact_geometry_is_left_where_it_is(corner):
    raw, _ = corner
    data = raw.normalized()
    field, pupil = quick_field(data, 0.0, iterations=10, pupil_update=True, device="cpu")
    na, moved = polish_on_bins(field, pupil, 0.0, data, data.optics.na_illum)
    # no LED of the exact geometry is moved to a different pattern than it has
    assert not moved.any()
    assert np.abs(na - data.optics.na_illum).max() <= 0.5 * 0.0315 + 1e-9
