"""Per-tile reading: a tile reads only its window of the stack (TIFF memory map / pages, HDF5)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from napari_fpminr.io import read_raw, write_raw
from napari_fpminr.optics.led_array import LEDArray
from napari_fpminr.simulate import paper_optics
from napari_fpminr.rawdata import RawData
from napari_fpminr.tiles.source import open_source


def _raw(n_leds=9, size=256, seed=0) -> RawData:
    rng = np.random.default_rng(seed)
    optics = paper_optics(9)
    leds = LEDArray.grid(3, 4.0, 70.0)
    optics = optics.replace(na_illum=leds.na_at())
    images = rng.random((n_leds, size, size + 8), dtype=np.float32) + 0.5
    return RawData(images, optics, leds=leds, z_um=1.5)


def test_native_tiff_window_is_read_lazily_and_equals_the_crop(tmp_path):
    raw = _raw()
    path = tmp_path / "s.tif"
    write_raw(raw, path)
    src = open_source(path)
    assert src.kind == "tiff" and src.lazy and src.frame_shape == (256, 264)
    assert src.header.leds is not None and src.header.z_um == 1.5
    whole = read_raw(path)
    tracemalloc.start()
    tile = src.tile_raw(100, 40, 32, 48)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(tile.intensities, whole.intensities[:, 100:132, 40:88])
    assert peak < whole.intensities.nbytes / 8  # the stack is 2.4 MB; a window is 55 kB
    assert src.background_level() == pytest.approx(whole.background_level(), rel=1e-6)


def test_compressed_tiff_is_read_page_by_page(tmp_path):
    import json

    import tifffile

    raw = _raw(size=64)
    path = tmp_path / "c.tif"
    write_raw(raw, path)
    tifffile.imwrite(path, raw.intensities, compression="zlib")
    json.loads(path.with_suffix(".json").read_text())
    src = open_source(path)
    np.testing.assert_array_equal(src.tile_raw(8, 4, 16, 20).intensities, raw.intensities[:, 8:24, 4:24])


def test_fpminr_mat_v73_window_is_read_with_h5py(tmp_path):
    import h5py

    raw = _raw(size=64)
    path = tmp_path / "s.mat"
    with h5py.File(path, "w") as f:  # MATLAB v7.3 stores H x W x N as N x W x H
        f["I_low"] = np.transpose(raw.intensities, (0, 2, 1))
        f["na_calib"] = raw.optics.na_illum.T
        for key, value in (("na_cal", raw.optics.na_obj), ("mag", raw.optics.mag), ("dpix_c", raw.optics.pixel_um),
                           ("lambda", raw.optics.wavelength_um)):
            f[key] = np.array([[value]])
    src = open_source(path)
    assert src.kind == "hdf5" and src.frame_shape == (64, 72)
    whole = read_raw(path)
    np.testing.assert_allclose(src.header.optics.na_illum, whole.optics.na_illum)
    np.testing.assert_array_equal(src.tile_raw(10, 20, 30, 40).intensities, whole.intensities[:, 10:40, 20:60])


def test_formats_without_lazy_reading_fall_back_to_memory(tmp_path):
    raw = _raw(size=32)
    path = tmp_path / "s.hdf5"
    write_raw(raw, path)
    src = open_source(path)
    assert src.kind == "memory" and not src.lazy
    whole = read_raw(path)
    np.testing.assert_array_equal(src.tile_raw(0, 0, 16, 16).intensities, whole.intensities[:, :16, :16])


DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.mark.skipif(not (DATA / "bloodsmear_green.mat").is_file(), reason="real data (../shared/data) absent")
def test_uconn_file_gives_per_tile_nas_from_its_led_board():
    """UConn data (MATLAB v5: read into memory once) carry the board: a corner tile sees shifted NAs."""
    from napari_fpminr.tile_layout import TileLayout
    from napari_fpminr.tiles.local_na import local_na, tile_leds

    src = open_source(DATA / "bloodsmear_green.mat")
    assert src.kind == "memory" and src.frame_shape == (128, 128)
    leds = tile_leds(src.header)
    assert leds is not None and leds.distance_mm == pytest.approx(90.88)
    o = src.header.optics
    layout = TileLayout(src.frame_shape, 64, 16, o.upsample, o.dx_lr_um)
    corner = layout.tile_at(0, 0)
    x_mm, y_mm = layout.centre_mm(corner)
    assert x_mm == pytest.approx(-32 * 1.845e-3) and y_mm == pytest.approx(-32 * 1.845e-3)
    shift = local_na(leds, (x_mm, y_mm), o.na_illum) - local_na(leds, (0.0, 0.0), o.na_illum)
    # the tile's centre sits 59 um left of and above the axis: every LED appears ~59 um further along +x
    # and +y, and (na_x, na_y) = -NA (cos, sin) of that direction drops by ~0.059 / 90.88
    assert np.all(shift < 0) and np.median(-shift) == pytest.approx(0.059 / 90.88, rel=0.3)
    np.testing.assert_allclose(local_na(leds, (0.0, 0.0), o.na_illum), o.na_illum, atol=1e-9)


@pytest.mark.skipif(not (DATA / "blood_aberration.mat").is_file(), reason="real data (../shared/data) absent")
def test_a_whole_frame_pupil_is_dropped_for_tiles_with_a_warning():
    with pytest.warns(UserWarning, match="recover-pupil"):
        src = open_source(DATA / "blood_aberration.mat")
    assert src.header.optics.pupil is None and src.tile_raw(0, 0, 64, 64).optics.pupil is None
