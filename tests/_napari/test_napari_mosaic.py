"""A whole-slide mosaic opens as ONE lazy multiscale layer; only the tiles in view are decoded.

The screenshot test needs a real canvas (``xvfb-run``); it saves the canvas to
``mosaic_screenshot.png`` in the test's temporary folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_fpminr.cli import main
from napari_fpminr.io import write_raw
from napari_fpminr.simulate import simulate


@pytest.fixture(scope="module")
def small_mosaic(tmp_path_factory) -> Path:
    """A real tiled INR run: 32 x 56 raw px in two tiles of 32 (overlap 8)."""
    d = tmp_path_factory.mktemp("mosaic")
    raw_path = d / "small.tif"
    write_raw(simulate("tilted", size=64, seed=0).raw.crop(0, 0, 32, 56), raw_path)
    out = d / "small.fpminr"
    assert main(["reconstruct", str(raw_path), "-o", str(out), "--method", "inr", "--z-min", "-3", "--z-max", "3",
                 "--tile", "32", "--overlap", "8", "-q", "--device", "cpu", "--keep-tiles"]) == 0
    return out


@pytest.fixture(scope="module")
def big_mosaic(small_mosaic) -> Path:
    """A 13 x 13-tile mosaic (320 x 320 raw px, 640 x 640 hr px) whose tiles reuse the two trained
    tile models alternately: large enough for a pyramid, cheap to build."""
    from napari_fpminr.io.mosaic_file import save_mosaic
    from napari_fpminr.simulate import paper_optics
    from napari_fpminr.tile_layout import TileLayout

    work = small_mosaic.with_name(small_mosaic.name + ".tiles")
    markers0 = [json.loads((work / f"tile_000_00{c}.json").read_text()) for c in (0, 1)]
    optics = paper_optics()
    layout = TileLayout((320, 320), 32, 8, 2, optics.dx_lr_um)
    markers = [dict(markers0[(t.row + t.col) % 2], row=t.row, col=t.col, window=list(t.window))
               for t in layout.tiles()]
    out = small_mosaic.with_name("big.fpminr")
    save_mosaic(out, layout, markers, work, optics, (-3.0, 3.0))
    return out


def test_reader_opens_a_mosaic_as_one_lazy_layer_with_z_in_um(small_mosaic):
    from napari_fpminr._napari._reader import get_reader

    reader = get_reader(str(small_mosaic))
    assert reader is not None
    (phase, p_meta, _), (amp, a_meta, kind) = reader(str(small_mosaic))
    assert kind == "image" and amp.shape[1:] == (64, 112) and amp.dtype == np.float32 and amp.ndim == 3
    assert a_meta["axis_labels"][0] == "z (µm)" and a_meta["units"][0] == "µm"
    assert a_meta["visible"] and not p_meta["visible"]
    z = a_meta["metadata"]["fpminr_z_um"]
    assert a_meta["translate"][0] == pytest.approx(z[0]) and a_meta["scale"][0] == pytest.approx(z[1] - z[0])
    mosaic = a_meta["metadata"]["fpminr_mosaic"]
    np.testing.assert_allclose(np.asarray(amp[3]), mosaic.render([z[3]])[0][0], rtol=1e-5, atol=1e-6)


def test_pyramid_levels_decode_only_the_tiles_in_view_and_cache_them(big_mosaic):
    from napari_fpminr._napari._mosaic import MosaicLevels, mosaic_layer_data
    from napari_fpminr.io.mosaic_file import load_mosaic

    (_, _, _), (levels, meta, _) = mosaic_layer_data(load_mosaic(big_mosaic))
    assert meta["multiscale"] and [a.shape[1] for a in levels] == [640, 320]
    mosaic = load_mosaic(big_mosaic)  # fresh: nothing decoded yet
    lv = MosaicLevels(mosaic, meta["metadata"]["fpminr_z_um"])
    levels = lv.levels()
    corner = np.asarray(levels[0][5, 540:, 540:])
    under = mosaic.layout.tiles_touching(540, 540, 100, 100)  # the view's tiles only, in one batch
    assert lv.pyramid.decoded_tiles == len(under) < mosaic.layout.n_tiles / 3 and lv.pyramid.decode_batches == 1
    again = np.asarray(levels[0][5, 540:, 540:])
    assert lv.pyramid.decode_batches == 1  # from the tile cache
    np.testing.assert_array_equal(corner, again)
    full = np.asarray(levels[0][5, 520:, 520:])
    coarse = np.asarray(levels[1][5, 260:, 260:])  # level 1: the 2x2 area average, not every other pixel
    np.testing.assert_allclose(coarse, full.reshape(60, 2, 60, 2).mean(axis=(1, 3)), rtol=1e-4, atol=1e-5)
    assert levels[1][5, 270, 270:280].shape == (10,) and levels[0][:2, 3, 4].shape == (2,)


def test_an_fpm_ome_zarr_opens_as_the_same_multiscale_z_layers(big_mosaic, tmp_path):
    from napari_fpminr._napari._reader import get_reader
    from napari_fpminr.io.mosaic_file import load_mosaic
    from napari_fpminr.tiles.assemble import mosaic_source, write_ome_zarr

    mosaic = load_mosaic(big_mosaic)
    z = np.array([-1.0, 0.0, 1.0])
    out = write_ome_zarr(tmp_path / "slide.zarr", mosaic_source(mosaic, z), mosaic.layout, z, mosaic.dx_hr_um)
    reader = get_reader(str(out))
    assert reader is not None
    (phase, p_meta, _), (amp, a_meta, kind) = reader(str(out))
    assert kind == "image" and a_meta["multiscale"] and [a.shape for a in amp] == [(3, 640, 640), (3, 320, 320)]
    assert a_meta["axis_labels"][0] == "z (µm)" and a_meta["units"][0] == "µm" and not p_meta["visible"]
    assert a_meta["scale"][0] == pytest.approx(1.0) and a_meta["translate"][0] == pytest.approx(-1.0)
    assert a_meta["scale"][1] == pytest.approx(mosaic.dx_hr_um)
    np.testing.assert_allclose(np.asarray(amp[0][2, 100:200, 300:400]),
                               mosaic.render([1.0], (100, 300, 100, 100))[0][0], rtol=1e-5, atol=1e-6)


@pytest.mark.gui
def test_mosaic_layer_on_a_real_canvas(make_napari_viewer, big_mosaic, tmp_path):
    viewer = make_napari_viewer(show=True)
    layers = viewer.open(str(big_mosaic), plugin="napari-fpminr")
    phase, amp = layers
    assert amp.multiscale and amp.visible and not phase.visible
    assert amp.axis_labels[0] == "z (µm)"
    viewer.reset_view()
    viewer.dims.set_point(0, amp.translate[0])
    shot_lo = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3].astype(float)
    viewer.dims.set_point(0, amp.translate[0] + amp.scale[0] * (amp.data[0].shape[0] - 1))
    shot_hi = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3].astype(float)
    assert shot_lo.std() > 5 and shot_hi.std() > 5    # not blank
    assert np.abs(shot_lo - shot_hi).mean() > 0.5      # the slide changes with z
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "mosaic_screenshot.png", shot_hi.astype(np.uint8))
    lv = amp.metadata["fpminr_levels"]
    n_planes = amp.data[0].shape[0]  # the two views, their z neighbours, coarse stand-ins: never the whole stack
    assert lv.pyramid.decoded_tiles < lv.mosaic.layout.n_tiles * n_planes / 4


def test_widget_tiles_section_runs_tiles_with_a_progress_bar_and_opens_the_mosaic(make_napari_viewer, qtbot):
    from napari_fpminr._napari._layers import raw_layer_data
    from napari_fpminr._napari._widget import ReconstructionWidget

    viewer = make_napari_viewer()
    raw = simulate("tilted", size=64, seed=0).raw.crop(0, 0, 32, 56)
    data, meta, _ = raw_layer_data(raw)
    viewer.add_image(data, **meta)
    widget = ReconstructionWidget(viewer)
    panel = widget.tiles_panel
    panel.tile.setValue(32)
    panel.overlap.setValue(8)
    panel.z_min.setValue(-3)
    panel.z_max.setValue(3)
    seen = []
    panel.start()
    panel.worker.yielded.connect(lambda ev: seen.append(getattr(ev, "tiles_done", None)))
    qtbot.waitUntil(lambda: panel.worker is None, timeout=120_000)
    assert panel.progress.value() == 1000 and "mosaic written" in panel.status.text()
    assert 2 in seen                                     # the bar went through the tiles
    names = [ly.name for ly in viewer.layers]
    assert any(n.startswith("mosaic") and n.endswith("amplitude") for n in names)
    assert panel.output.is_file()
