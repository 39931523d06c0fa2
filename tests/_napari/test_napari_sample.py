"""Sample data, the launcher, and what a real canvas shows (run under xvfb-run)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_fpminr._napari._layers import MODEL_KEY, RAW_KEY
from napari_fpminr._napari._sample_data import sample_model_path

pytestmark = pytest.mark.gui


def test_shipped_sample_model_is_small():
    path = sample_model_path()
    assert path.is_file()
    assert len(path.read_bytes()) < 1_000_000


def test_sample_model_shows_a_browsable_zstack_on_a_real_canvas(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-fpminr", "tilted_model")
    phase, amp = viewer.layers                  # amplitude on top, phase hidden (issue 9)
    assert isinstance(amp.data, da.Array) and MODEL_KEY in amp.metadata
    assert amp.data.shape[0] > 10 and amp.axis_labels == ("z (µm)", "y", "x")
    assert amp.visible and not phase.visible
    z_lo, z_hi = amp.translate[0], amp.translate[0] + amp.scale[0] * (amp.data.shape[0] - 1)
    viewer.dims.set_point(0, z_lo)
    shot_lo = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3].astype(float)
    viewer.dims.set_point(0, z_hi)
    shot_hi = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3].astype(float)
    assert shot_lo.std() > 5 and shot_hi.std() > 5             # not blank
    assert np.abs(shot_lo - shot_hi).mean() > 1                 # the slices differ with z


def test_launcher_opens_sample_raw_with_widget_docked(make_napari_viewer, qtbot):
    from napari_fpminr._napari.launch import open_viewer

    viewer, widget = open_viewer(viewer=make_napari_viewer())
    (raw_layer,) = viewer.layers
    assert raw_layer.metadata[RAW_KEY].n_leds == raw_layer.data.shape[0]
    assert widget.selected_raw() is raw_layer.metadata[RAW_KEY]
    qtbot.waitUntil(lambda: widget.backend_ready, timeout=60_000)
    assert widget.start_btn.isEnabled()
