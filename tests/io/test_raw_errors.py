"""Bad raw-data input: one-line FPMInputError naming the file; detect_format never raises."""

import json

import h5py
import numpy as np
import pytest
import scipy.io
import tifffile
from io_cases import make_raw

from napari_fpminr.errors import FPMInputError, MissingParameterError
from napari_fpminr.io import detect_format, read_raw, write_raw


def expect_error(path, *fragments, names=None, exc=FPMInputError):
    with pytest.raises(exc) as err:
        read_raw(path)
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 400
    assert (names or path.name) in msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


def fpminr_vars(raw):
    return {"I_low": np.moveaxis(raw.intensities, 0, -1), "na_calib": raw.optics.na_illum, "na_cal": 0.25,
            "mag": 10.0, "dpix_c": 3.45, "lambda": 0.5}


def test_nonexistent_path(tmp_path):
    expect_error(tmp_path / "nope.mat", "file not found")
    assert detect_format(tmp_path / "nope.mat") is None


@pytest.mark.parametrize("name", ["empty.mat", "empty.hdf5", "empty.tif"])
def test_empty_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    expect_error(tmp_path / name, "empty (0 bytes)")
    assert detect_format(tmp_path / name) is None


@pytest.mark.parametrize("name", ["t.mat", "t.hdf5", "t.tif"])
def test_truncated_file(tmp_path, name):
    write_raw(make_raw(n_leds=20, h=16, w=16), tmp_path / name)
    data = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    expect_error(tmp_path / name, "truncated or corrupt")
    assert detect_format(tmp_path / name) is None


def test_mat_with_other_variables_is_foreign(tmp_path):
    scipy.io.savemat(tmp_path / "other.mat", {"temperature": np.arange(3.0), "notes": "hello"})
    assert detect_format(tmp_path / "other.mat") is None
    expect_error(tmp_path / "other.mat", "not a recognised FPM raw-data file (expected", "temperature")


@pytest.mark.parametrize("name, content", [
    ("picture.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"),
    ("notes.txt", b"just some text\n"),
    ("fake.mat", b"MATLAB 5.0 MAT-file, but nothing after the header"),
])
def test_foreign_files(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    assert detect_format(tmp_path / name) is None
    msg = expect_error(tmp_path / name)
    assert "not a recognised FPM raw-data file" in msg or "truncated or corrupt" in msg


def test_hdf5_without_our_datasets_is_foreign(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["data"] = np.zeros(3)
    assert detect_format(tmp_path / "x.h5") is None
    expect_error(tmp_path / "x.h5", "not a recognised", "data")


def test_two_dimensional_i_low(tmp_path):
    v = fpminr_vars(make_raw(n_leds=1))
    v["I_low"] = v["I_low"][:, :, 0]
    scipy.io.savemat(tmp_path / "flat.mat", v)
    expect_error(tmp_path / "flat.mat", "I_low must be a real H x W x N image stack", "(8, 10)")


def test_nan_in_images_and_in_led_table(tmp_path):
    v = fpminr_vars(make_raw())
    v["I_low"][2, 3, 1] = np.nan
    scipy.io.savemat(tmp_path / "nan.mat", v)
    expect_error(tmp_path / "nan.mat", "1 NaN")
    v = fpminr_vars(make_raw())
    v["na_calib"][0, 0] = np.nan
    scipy.io.savemat(tmp_path / "nan_na.mat", v)
    expect_error(tmp_path / "nan_na.mat", "NaN")


def test_negative_intensities(tmp_path):
    v = fpminr_vars(make_raw())
    v["I_low"][0, 0, 0] = -1.0
    scipy.io.savemat(tmp_path / "neg.mat", v)
    expect_error(tmp_path / "neg.mat", "negative")


def test_led_count_mismatch(tmp_path):
    v = fpminr_vars(make_raw(n_leds=6))
    v["na_calib"] = v["na_calib"][:5]
    scipy.io.savemat(tmp_path / "x.mat", v)
    expect_error(tmp_path / "x.mat", "I_low has 6 images but na_calib lists 5 LEDs")


def test_led_count_mismatch_ptylab_and_native(tmp_path):
    write_raw(make_raw(n_leds=6), tmp_path / "p.hdf5")
    with h5py.File(tmp_path / "p.hdf5", "r+") as f:
        enc = f["encoder"][:4]
        del f["encoder"]
        f["encoder"] = enc
    expect_error(tmp_path / "p.hdf5", "ptychogram has 6 images but encoder lists 4 LEDs")
    write_raw(make_raw(n_leds=6), tmp_path / "n.tif")
    meta = json.loads((tmp_path / "n.json").read_text())
    meta["na_x"], meta["na_y"] = meta["na_x"][:3], meta["na_y"][:3]
    (tmp_path / "n.json").write_text(json.dumps(meta))
    expect_error(tmp_path / "n.tif", "TIFF has 6 images but n.json lists 3 LEDs")


def test_missing_variable_in_ours(tmp_path):
    v = fpminr_vars(make_raw())
    del v["dpix_c"]
    scipy.io.savemat(tmp_path / "nopix.mat", v)
    expect_error(tmp_path / "nopix.mat", "missing 'dpix_c'", "pixel_um=", exc=MissingParameterError)
    assert read_raw(tmp_path / "nopix.mat", pixel_um=6.5).optics.pixel_um == 6.5


def test_native_sidecar_missing(tmp_path):
    tifffile.imwrite(tmp_path / "lone.tif", np.ones((2, 4, 4), np.float32))
    assert detect_format(tmp_path / "lone.tif") is None
    expect_error(tmp_path / "lone.tif", "JSON sidecar lone.json not found")


def test_native_sidecar_invalid_json(tmp_path):
    write_raw(make_raw(), tmp_path / "s.tif")
    (tmp_path / "s.json").write_text('{"wavelength_um": 0.5, "na_obj": ')
    expect_error(tmp_path / "s.tif", "invalid JSON", names="s.json")


@pytest.mark.parametrize("drop, fragment, exc", [
    ("pixel_um", "missing 'pixel_um'", MissingParameterError),
    ("na_y", "missing key 'na_y'", FPMInputError),
])
def test_native_sidecar_missing_key(tmp_path, drop, fragment, exc):
    write_raw(make_raw(), tmp_path / "s.tif")
    meta = json.loads((tmp_path / "s.json").read_text())
    del meta[drop]
    (tmp_path / "s.json").write_text(json.dumps(meta))
    expect_error(tmp_path / "s.tif", fragment, names="s.", exc=exc)


def test_native_sidecar_without_leds(tmp_path):
    write_raw(make_raw(), tmp_path / "s.tif")
    meta = json.loads((tmp_path / "s.json").read_text())
    del meta["na_x"], meta["na_y"]
    (tmp_path / "s.json").write_text(json.dumps(meta))
    expect_error(tmp_path / "s.tif", "missing key 'grid_size'", names="s.json")


def test_write_raw_rejects_unknown_suffix(tmp_path):
    with pytest.raises(FPMInputError, match="suffix '.xyz'"):
        write_raw(make_raw(), tmp_path / "d.xyz")


def test_truncated_plain_tiff_without_shape_metadata(tmp_path):
    raw = make_raw(n_leds=8, h=16, w=16)
    write_raw(raw, tmp_path / "p.tif")
    tifffile.imwrite(tmp_path / "p.tif", raw.intensities, metadata=None)  # no shape hint in the file
    data = (tmp_path / "p.tif").read_bytes()
    (tmp_path / "p.tif").write_bytes(data[: len(data) // 2])
    assert detect_format(tmp_path / "p.tif") is None
    expect_error(tmp_path / "p.tif", "truncated or corrupt")
