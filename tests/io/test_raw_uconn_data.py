"""The real UConn blood-smear files in ../shared/data (skipped when absent)."""

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from io_cases import write_mat73

from napari_fpminr.io import detect_format, read_raw
from napari_fpminr.optics import FPMForward

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
GREEN, RED, ABERRATION = (DATA / f"{n}.mat" for n in ("bloodsmear_green", "bloodsmear_red", "blood_aberration"))
pytestmark = pytest.mark.skipif(not GREEN.exists(), reason="shared/data (UConn files) not available")


@pytest.fixture(scope="module")
def green():
    return read_raw(GREEN)


def test_green_file_optics(green):
    assert detect_format(GREEN) == "uconn"
    o = green.optics
    assert green.n_leds == 225 and green.lr_shape == (128, 128)
    assert int(o.bright_field.sum()) == 19
    assert 0.38 < o.na_illum_abs.max() < 0.42
    assert o.wavelength_um == pytest.approx(0.532) and green.z_um == pytest.approx(10.0)
    assert o.na_obj == 0.1 and o.dx_lr_um == pytest.approx(1.845)
    assert o.upsample == 4 and o.dx_hr_um == pytest.approx(0.461, abs=1e-3)
    assert o.na_illum_abs[0] < 0.005  # first LED: the central one, 0.35 mm off the patch centre
    assert o.pupil is None
    amp = scipy.io.loadmat(GREEN, variable_names=["imlow_HDR"])["imlow_HDR"]
    np.testing.assert_allclose(green.intensities[7], amp[:, :, 7].astype(np.float64) ** 2, rtol=1e-6)


@pytest.mark.parametrize("path", [GREEN, RED, ABERRATION], ids=lambda p: p.stem)
def test_bright_images_are_exactly_the_leds_inside_the_objective_na(path):
    """A blood smear is mostly clear: an image is bright iff its LED's NA < 0.1 (checks order, offsets
    and the slab model; LEDs within 0.005 of the pupil edge are partly bright and left out)."""
    raw = read_raw(path)
    na = raw.optics.na_illum_abs
    level = raw.intensities.mean(axis=(1, 2))
    bright = level > 0.5 * np.median(level[na < 0.07])
    clear = np.abs(na - raw.optics.na_obj) > 0.005
    np.testing.assert_array_equal(bright[clear], (na < raw.optics.na_obj)[clear])


def test_red_file_defocus_sign():
    assert read_raw(RED).z_um == pytest.approx(-55.0)


def test_calibrated_pupil_reaches_the_forward_model():
    raw = read_raw(ABERRATION)
    pupil = raw.optics.pupil
    stored = scipy.io.loadmat(ABERRATION, variable_names=["aberration"])["aberration"]
    assert pupil is not None and pupil.shape == (128, 128) and np.iscomplexobj(pupil)
    np.testing.assert_array_equal(pupil, stored)  # rows = ky, columns = kx, as the MATLAB code builds it
    fwd = FPMForward(raw.optics, raw.lr_shape)
    support = fwd.support.numpy()
    got = fwd.pupil.numpy()
    np.testing.assert_array_equal(got[support], pupil[support])
    assert np.all(got[~support] == 0)
    phase = np.angle(pupil[support])
    assert phase.std() > 0.1  # a real aberration, not a flat disk
    assert raw.z_um == 0.0


def test_v73_copy_of_a_real_file_reads_identically(tmp_path):
    keys = ["imlow_HDR", "wlength", "z", "xint", "yint", "theta", "aberration"]
    variables = scipy.io.loadmat(ABERRATION, variable_names=keys)
    write_mat73(tmp_path / "aberration73.mat", {k: variables[k] for k in keys})
    a, b = read_raw(ABERRATION), read_raw(tmp_path / "aberration73.mat")
    assert detect_format(tmp_path / "aberration73.mat") == "uconn"
    np.testing.assert_array_equal(a.intensities, b.intensities)
    np.testing.assert_array_equal(a.optics.na_illum, b.optics.na_illum)
    np.testing.assert_allclose(a.optics.pupil, b.optics.pupil, rtol=1e-6)
    assert a.z_um == b.z_um and a.optics.wavelength_um == b.optics.wavelength_um
