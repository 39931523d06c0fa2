"""Browsing a mosaic layer on a real canvas: scroll z, pan, and what the canvas holds is ``fpminr render``.

The canvas never waits for a decode: a view not decoded yet shows the coarsest level at once and is
replaced when the background decode is done; the view's z neighbours are decoded in the
background (:mod:`napari_fpminr._napari._mosaic_view`). Needs a real canvas (``xvfb-run``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_fpminr.cli import main


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> Path:
    """An untrained 640² hr mosaic (6 x 6 tiles of 64 raw px) of a known phase-rich field."""
    from napari_fpminr.optics.samples import band_limit, cell_layer
    from napari_fpminr.simulate import paper_optics
    from napari_fpminr.tiles.synthetic import synthetic_mosaic

    optics = paper_optics()
    cells = cell_layer((640, 640), optics.dx_hr_um, np.random.default_rng(5), phase_max_rad=2.0, cells_per_100um2=3.0)
    field = band_limit(cells, optics.dx_hr_um, optics.na_synthetic / optics.wavelength_um).astype(np.complex64)
    return synthetic_mosaic(tmp_path_factory.mktemp("browse") / "slide.fpminr", field, optics, 64, 16)


def test_prefetcher_decodes_the_neighbouring_planes_and_a_new_request_supersedes(slide):
    from napari_fpminr._napari._mosaic import mosaic_layer_data
    from napari_fpminr._napari._prefetch import Prefetcher
    from napari_fpminr.io.mosaic_file import load_mosaic

    (_, _, _), (levels, meta, _) = mosaic_layer_data(load_mosaic(slide))
    lv = meta["metadata"]["fpminr_levels"]
    view = (100, 150, 200, 250)
    pf = Prefetcher([lv], depth=1)
    try:
        pf.schedule(10, 1, view)
        pf.schedule(20, 1, view)  # the user scrolled on: plane 20's neighbourhood is what counts
        assert pf.wait(60)
        assert all(lv.ready(iz, 1, view) for iz in (19, 20, 21))
        assert not lv.ready(25, 1, view)
        before = lv.pyramid.decode_batches
        got = np.asarray(levels[0][21, 100:300, 150:400])  # the next plane: from the cache
        assert lv.pyramid.decode_batches == before
        np.testing.assert_allclose(got, lv.mosaic.render([lv.z_um[21]], view)[0][0], rtol=1e-4, atol=1e-5)
    finally:
        pf.close()


def test_a_view_not_decoded_gets_the_coarse_stand_in_and_the_thumbnail_read_does_not_supersede_it(slide):
    from napari_fpminr._napari._mosaic import mosaic_layer_data
    from napari_fpminr.io.mosaic_file import load_mosaic

    (_, _, _), (levels, meta, _) = mosaic_layer_data(load_mosaic(slide))
    lv = meta["metadata"]["fpminr_levels"]
    calls = []
    lv.nonblocking, lv.on_view = True, lambda *a: calls.append(a)
    stand_in = np.asarray(levels[0][7, 100:300, 101:301])  # not decoded: answered at once from level 1
    assert calls == [(7, 1, (100, 101, 200, 200), True)] and lv.placeholders == 1
    coarse = np.asarray(levels[1][7, 50:150, 50:151])
    np.testing.assert_array_equal(stand_in, np.repeat(np.repeat(coarse, 2, 0), 2, 1)[:, 1:201])
    assert len(calls) == 1  # napari's thumbnail read of the coarsest level schedules nothing
    lv.view(7, 1, (100, 101, 200, 200))
    real = np.asarray(levels[0][7, 100:300, 101:301])
    assert calls[-1][-1] is False and lv.placeholders == 1 and not np.array_equal(real, stand_in)


def _shown(layer) -> tuple[np.ndarray, tuple[int, int]]:
    """The canvas's current image of ``layer`` and its top-left corner (level px)."""
    raw = np.asarray(layer._slice.image.raw)
    corner = layer.corner_pixels[0, -2:]
    return raw, (int(corner[0]), int(corner[1]))


@pytest.mark.gui
def test_scrolling_z_and_panning_a_mosaic_layer_shows_what_fpminr_render_writes(make_napari_viewer, qtbot, slide,
                                                                                 tmp_path):
    viewer = make_napari_viewer(show=True)
    phase, amp = viewer.open(str(slide), plugin="napari-fpminr")
    lv = amp.metadata["fpminr_levels"]
    pf = amp.metadata["fpminr_prefetch"]
    assert lv.nonblocking
    z_um = amp.metadata["fpminr_z_um"]
    viewer.camera.zoom = 4.0 / lv.mosaic.dx_hr_um  # level 0: 4 screen px per hr px
    for iz, centre in ((30, (300, 300)), (31, (300, 300)), (31, (420, 200))):  # scroll z, then pan
        viewer.dims.set_current_step(0, iz)
        viewer.camera.center = (float(z_um[iz]),) + tuple(c * lv.mosaic.dx_hr_um for c in centre)
        qtbot.waitUntil(lambda: pf.wait(0) and amp.data_level == 0
                        and lv.ready(iz, 1, tuple(_shown(amp)[1]) + _shown(amp)[0].shape), timeout=60_000)
        qtbot.wait(50)  # the queued refresh
        amp.refresh()
        raw, (y0, x0) = _shown(amp)
        out = tmp_path / f"r{iz}_{centre[0]}.npz"
        assert main(["render", str(slide), "-o", str(out), "--z", repr(float(z_um[iz])),
                     "--region", str(y0), str(x0), str(raw.shape[0]), str(raw.shape[1]), "-q"]) == 0
        np.testing.assert_allclose(raw, np.load(out)["amplitude"][0], rtol=1e-4, atol=1e-5)
    assert lv.placeholders >= 1            # the canvas was answered at once at least once, then refreshed
    qtbot.waitUntil(lambda: pf.wait(0), timeout=60_000)
    view = (y0, x0) + raw.shape
    assert lv.ready(30, 1, view) and lv.ready(32, 1, view)  # the last view's z neighbours, decoded in the background


def test_widget_z_stack_box_and_all_in_focus_act_on_a_mosaic_layer(make_napari_viewer, qtbot, slide):
    from napari_fpminr._napari._widget import ReconstructionWidget

    viewer = make_napari_viewer()
    phase, amp = viewer.open(str(slide), plugin="napari-fpminr")
    widget = ReconstructionWidget(viewer)
    viewer.layers.selection.active = amp
    mosaic = amp.metadata["fpminr_mosaic"]
    assert widget.current_model() is mosaic
    widget.view_z_min.setValue(-1.0)
    widget.view_z_max.setValue(1.0)
    widget.view_z_step.setValue(0.5)
    widget.show_model_layers()
    amp2 = viewer.layers[amp.name]
    assert amp2.multiscale and amp2.data[0].shape[0] == 5 and amp2.metadata["fpminr_mosaic"] is mosaic
    np.testing.assert_allclose(amp2.metadata["fpminr_z_um"], [-1.0, -0.5, 0.0, 0.5, 1.0])
    viewer.layers.selection.active = amp2
    worker = widget.show_all_in_focus()
    assert worker is not None
    qtbot.waitUntil(lambda: widget._aif_worker is None, timeout=120_000)
    fused = viewer.layers[f"mosaic {slide.stem} all-in-focus"]
    depth = viewer.layers[f"mosaic {slide.stem} depth (µm)"]
    assert fused.data.shape == depth.data.shape == mosaic.hr_shape
    assert np.nanmax(np.abs(depth.data)) <= 1.0 + 1e-6 and np.isfinite(fused.data).all()
