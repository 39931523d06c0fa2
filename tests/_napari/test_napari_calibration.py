"""The widget's "Calibrate illumination" step in a real napari viewer (run under xvfb-run).

Calibration runs on a worker thread; when it is done the raw layer carries the calibrated data
(Revert restores the nominal ones), and the before/after view shows the nominal and calibrated LED
spectrum centres as points layers over the bright-field disk image.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from napari_fpminr._napari._calibration import NOMINAL_KEY, led_spectrum_points
from napari_fpminr._napari._layers import RAW_KEY, raw_layer_data

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "calib"))
from calib_cases import miscalibrated  # noqa: E402

pytestmark = pytest.mark.gui
PLUGIN, WIDGET = "napari-fpminr", "FPM-INR reconstruction"


def test_led_spectrum_points_are_the_disk_centres(tiny_raw):
    """An LED of NA (na_x, na_y) sits na/λ from the spectrum centre: (h//2 + na_y·h·dx/λ, ...)."""
    pts = led_spectrum_points(tiny_raw, np.array([[0.0, 0.0], [0.12, -0.12]]))
    h, w = tiny_raw.lr_shape
    step = 0.12 * w * tiny_raw.optics.dx_lr_um / tiny_raw.optics.wavelength_um
    assert np.allclose(pts, [[h // 2, w // 2], [h // 2 - step, w // 2 + step]])


@pytest.mark.slow
def test_calibrate_step_applies_calibration_and_shows_led_positions(make_napari_viewer, qtbot):
    raw, true, _, _ = miscalibrated(32, brightness_spread=0.1)
    viewer = make_napari_viewer()
    data, meta, _ = raw_layer_data(raw)
    layer = viewer.add_image(data, **meta)
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    panel = widget.calibration_panel
    panel.run_btn.click()
    qtbot.waitUntil(lambda: panel.worker is None and panel.calibration is not None, timeout=300_000)
    cal = panel.calibration
    assert not cal.fallback
    calibrated = layer.metadata[RAW_KEY]
    assert layer.metadata[NOMINAL_KEY] is raw
    assert np.abs(calibrated.optics.na_illum - true.na_at()).max() < np.abs(raw.optics.na_illum - true.na_at()).max()
    names = [ly.name for ly in viewer.layers]
    nominal_pts = viewer.layers[f"{layer.name} LEDs nominal"]
    calibrated_pts = viewer.layers[f"{layer.name} LEDs calibrated"]
    assert f"{layer.name} bright-field disks (log |spectrum|)" in names
    assert len(nominal_pts.data) == len(calibrated_pts.data) == raw.n_leds
    assert not np.allclose(nominal_pts.data, calibrated_pts.data)
    assert "misfit" in panel.status.text()
    panel.revert_btn.click()
    assert layer.metadata[RAW_KEY] is raw and NOMINAL_KEY not in layer.metadata
