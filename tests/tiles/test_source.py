"""Per-tile reading: a tile reads only its window of the stack (TIFF memory map / pages, HDF5)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from napari_fpminr.io import read_raw, write_raw
from napari_fpminr.optics.led_array import LEDArray
from napari_fpminr.optics.simulate import paper_optics
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
