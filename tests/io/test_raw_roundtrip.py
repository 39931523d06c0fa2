"""Raw-data writers and readers: round trips, MATLAB v7.3, format conventions, overrides."""

import json

import numpy as np
import pytest
import scipy.io
from io_cases import make_raw, write_mat73

from napari_fpminr.errors import MissingParameterError
from napari_fpminr.io import atomic_write, detect_format, read_raw, write_raw
from napari_fpminr.optics.led_array import led_grid_na


def assert_same(a, b, pupil=True):
    np.testing.assert_array_equal(a.intensities, b.intensities)
    np.testing.assert_allclose(a.optics.na_illum, b.optics.na_illum, rtol=0, atol=1e-12)
    for name in ("wavelength_um", "na_obj", "mag", "pixel_um", "upsample"):
        assert getattr(a.optics, name) == pytest.approx(getattr(b.optics, name), rel=1e-12), name
    assert a.z_um == pytest.approx(b.z_um)
    if pupil:
        if a.optics.pupil is None:
            assert b.optics.pupil is None
        else:
            np.testing.assert_array_equal(a.optics.pupil, b.optics.pupil)


@pytest.mark.parametrize("name, fmt", [("d.mat", "fpminr_mat"), ("d.hdf5", "ptylab"), ("d.h5", "ptylab"),
                                       ("d.tif", "native"), ("d.tiff", "native")])
def test_write_then_read_gives_the_same_data(tmp_path, name, fmt):
    raw = make_raw(pupil=fmt != "native")
    out = write_raw(raw, tmp_path / name)
    assert out == tmp_path / name and detect_format(out) == fmt
    back = read_raw(out)
    assert back.meta["format"] == fmt and back.source == out
    assert_same(raw, back)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [name] + ([name.split(".")[0] + ".json"] if fmt == "native" else []))  # no temp files left


def test_fpminr_mat_layout_is_what_the_reference_code_reads(tmp_path):
    raw = make_raw(n_leds=4, h=6, w=9)
    write_raw(raw, tmp_path / "d.mat")
    m = scipy.io.loadmat(tmp_path / "d.mat")
    assert m["I_low"].shape == (6, 9, 4)  # H x W x N, MATLAB order
    np.testing.assert_array_equal(m["I_low"][:, :, 2], raw.intensities[2])
    np.testing.assert_allclose(m["na_calib"], raw.optics.na_illum)
    assert m["lambda"].item() == pytest.approx(0.5126) and m["dpix_c"].item() == 3.45
    assert m["na_cal"].item() == 0.25 and m["mag"].item() == 10


def test_mat_v73_with_reversed_axes_reads_like_v5(tmp_path):
    raw = make_raw(n_leds=5, h=7, w=11, pupil=True)
    write_raw(raw, tmp_path / "v5.mat")
    variables = {k: v for k, v in scipy.io.loadmat(tmp_path / "v5.mat").items() if not k.startswith("__")}
    write_mat73(tmp_path / "v73.mat", variables)
    assert detect_format(tmp_path / "v73.mat") == "fpminr_mat"
    assert_same(read_raw(tmp_path / "v5.mat"), read_raw(tmp_path / "v73.mat"))


def test_missing_wavelength_asks_for_it_and_keywords_fill_or_replace(tmp_path):
    raw = make_raw()
    m = {"I_low": np.moveaxis(raw.intensities, 0, -1), "na_calib": raw.optics.na_illum,
         "na_cal": 0.25, "mag": 10.0, "dpix_c": 3.45}
    scipy.io.savemat(tmp_path / "ref.mat", m)
    with pytest.raises(MissingParameterError) as err:
        read_raw(tmp_path / "ref.mat")
    msg = str(err.value)
    assert "ref.mat" in msg and "wavelength" in msg and "--wavelength-um" in msg and "0.5126" in msg
    got = read_raw(tmp_path / "ref.mat", wavelength_um=0.5126, mag=20.0, upsample=5)
    assert got.optics.wavelength_um == 0.5126 and got.optics.mag == 20.0 and got.optics.upsample == 5
    assert got.optics.pixel_um == 3.45 and got.z_um is None
    np.testing.assert_array_equal(got.intensities, raw.intensities)


def test_uconn_amplitudes_are_squared_and_leds_follow_the_spiral(tmp_path):
    rng = np.random.default_rng(1)
    amp = rng.uniform(0.1, 2.0, size=(6, 5, 9)).astype(np.float32)  # H x W x N (N=9: 3x3 spiral)
    scipy.io.savemat(tmp_path / "u.mat", {"imlow_HDR": amp, "wlength": 5.32e-7, "z": -2e-5, "xint": 0.5,
                                          "yint": -0.25, "theta": 0.0, "aberration": 0})
    assert detect_format(tmp_path / "u.mat") == "uconn"
    raw = read_raw(tmp_path / "u.mat")
    np.testing.assert_allclose(raw.intensities, np.moveaxis(amp, -1, 0).astype(np.float64) ** 2, rtol=1e-6)
    assert raw.z_um == pytest.approx(-20.0) and raw.optics.wavelength_um == pytest.approx(0.532)
    assert raw.optics.pupil is None and raw.optics.na_obj == 0.1 and raw.optics.dx_lr_um == 1.845
    expected = led_grid_na(3, 4.0, 90.88, centre_mm=(0.5, -0.25), order="spiral", slab_thickness_mm=1.0,
                           slab_index=1.52)
    np.testing.assert_allclose(raw.optics.na_illum, expected, atol=1e-12)
    # second LED one pitch towards +x: illuminates with negative na_x (DESIGN sign)
    assert raw.optics.na_illum[1, 0] < -0.04


def test_ptylab_encoder_is_row_col_and_gives_direction_sines(tmp_path):
    import h5py

    enc = np.array([[0.0, 0.0], [0.01, 0.0], [0.0, -0.02]])  # (y, x) metres
    with h5py.File(tmp_path / "p.hdf5", "w") as f:
        f["ptychogram"] = np.ones((3, 4, 6), np.float32)
        f["encoder"] = enc
        f["zled"] = 0.05
        f["dxd"] = 6.5e-6
        f["magnification"] = 4.0
        f["NA"] = 0.1
        f["wavelength"] = 6.25e-7
    raw = read_raw(tmp_path / "p.hdf5")
    r = np.sqrt((enc**2).sum(1) + 0.05**2)
    np.testing.assert_allclose(raw.optics.na_illum, np.stack([enc[:, 1] / r, enc[:, 0] / r], 1))
    assert raw.optics.pixel_um == pytest.approx(6.5) and raw.optics.wavelength_um == pytest.approx(0.625)
    assert raw.optics.dx_lr_um == pytest.approx(6.5 / 4)


def test_native_sidecar_with_led_grid_geometry(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "s.tif", np.ones((9, 4, 5), np.float32))
    grid = {"grid_size": 3, "pitch_mm": 5.0, "distance_mm": 60.0, "centre_mm": [1.0, 0.0], "order": "raster",
            "slab_thickness_mm": 1.0, "slab_index": 1.5}
    (tmp_path / "s.json").write_text(json.dumps({"wavelength_um": 0.6, "na_obj": 0.2, "mag": 4, "pixel_um": 6.5,
                                                 "led_grid": grid, "z_um": -4}))
    raw = read_raw(tmp_path / "s.tif")
    expected = led_grid_na(3, 5.0, 60.0, centre_mm=(1.0, 0.0), order="raster", slab_thickness_mm=1.0,
                           slab_index=1.5)
    np.testing.assert_allclose(raw.optics.na_illum, expected)
    assert raw.z_um == -4 and raw.n_leds == 9


def test_atomic_write_replaces_on_success_and_leaves_target_untouched_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".bin"
            tmp.write_bytes(b"partial")
            raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    with atomic_write(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_failed_write_raw_keeps_the_previous_file(tmp_path):
    good = make_raw()
    write_raw(good, tmp_path / "d.mat")
    before = (tmp_path / "d.mat").read_bytes()
    bad = make_raw()
    object.__setattr__(bad, "intensities", object())  # makes the MATLAB writer fail mid-way
    with pytest.raises(Exception):
        write_raw(bad, tmp_path / "d.mat")
    assert (tmp_path / "d.mat").read_bytes() == before and len(list(tmp_path.iterdir())) == 1
