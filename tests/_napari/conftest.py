"""Qt/napari test setup: a real viewer needs a display (run under ``xvfb-run``); without one we
fall back to Qt's offscreen platform, and tests that need real rendering skip."""

from __future__ import annotations

import os

import numpy as np
import pytest

if not os.environ.get("DISPLAY") and not os.environ.get("QT_QPA_PLATFORM"):
    os.environ["QT_QPA_PLATFORM"] = "offscreen"

HAS_DISPLAY = bool(os.environ.get("DISPLAY")) and os.environ.get("QT_QPA_PLATFORM", "xcb") != "offscreen"


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gui`` need a real viewer (OpenGL): skip them without an X display."""
    if HAS_DISPLAY:
        return
    skip = pytest.mark.skip(reason="needs a real X display (run under xvfb-run)")
    for item in items:
        if "gui" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_raw():
    """A 24x24-pixel, 9-LED raw set with paper-like optics (no simulator needed)."""
    from napari_fpminr.rawdata import RawData
    from napari_fpminr.optics.system import Optics

    grid = np.array([(x, y) for y in (-1, 0, 1) for x in (-1, 0, 1)], dtype=float) * 0.12
    optics = Optics(wavelength_um=0.522, na_obj=0.25, mag=10.0, pixel_um=3.45, na_illum=grid, upsample=2)
    rng = np.random.default_rng(0)
    intensities = (1.0 + 0.1 * rng.standard_normal((9, 24, 24))).clip(0).astype(np.float32)
    return RawData(intensities=intensities, optics=optics, z_um=3.0)


@pytest.fixture(autouse=True)
def workers_finish_with_their_test():
    """No napari worker thread outlives its test: a widget's background work (the compute backend's
    warm-up, a data check, an all-in-focus) left running would compete for the CPU with the next
    tests and, at interpreter exit, emit into Qt objects already deleted (an abort)."""
    yield
    from qtpy.QtCore import QThreadPool

    QThreadPool.globalInstance().waitForDone(120_000)
