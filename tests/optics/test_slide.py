"""The ``slide`` simulation: exact spherical waves per pixel, smooth depth, against independent models."""

import math

import numpy as np
import pytest
import torch

from napari_fpminr.cli import main
from napari_fpminr.errors import FPMInputError
from napari_fpminr.io import read_raw
from napari_fpminr.optics import FPMForward
from napari_fpminr.optics.led_array import LEDArray
from napari_fpminr.optics.slide import chebyshev_node_count, slide_images, slide_optics
from napari_fpminr.simulate import simulate

CPU = torch.device("cpu")


def board(distance_mm, n=9, na_pitch=0.06, centre_mm=(0.0, 0.0)):
    """A 3x3 board whose pitch gives steps of ``na_pitch`` at ``distance_mm`` (bright and dark field)."""
    pitch = na_pitch * distance_mm
    return LEDArray.grid(3, pitch, distance_mm, centre_mm=centre_mm)


def on_grid_board(bins, df, wavelength_um, distance_mm, centre_mm=(0.0, 0.0)):
    """LEDs placed so that the field centre sees them exactly at ``bins`` (``(kx, ky)``) of ``df``."""
    na = np.asarray(bins, dtype=float) * df * wavelength_um
    pos = -na * distance_mm / np.sqrt(1 - (na**2).sum(axis=1, keepdims=True))
    pitch = 1.0
    return LEDArray(offsets=(pos - np.asarray(centre_mm)) / pitch, pitch_mm=pitch, distance_mm=distance_mm,
                    centre_mm=centre_mm)


BINS = [[0, 0], [3, 0], [-2, 4], [5, -5], [-9, -3], [12, 1]]  # bright field to dark field (NA 0.15 ~ 8.5 bins)


def optics_for(leds, field_mm=(0.0, 0.0)):
    optics, _ = slide_optics()
    return optics.replace(na_illum=leds.na_at(field_mm))


def region(size, margin, optics, seed=0):
    """A random smooth-ish sample on the hr grid of the simulated region."""
    n = (size + 2 * margin) * optics.upsample
    rng = np.random.default_rng(seed)
    amp = 1 + 0.2 * rng.standard_normal((n, n))
    return amp * np.exp(0.5j * rng.standard_normal((n, n)))


def forward_crop(sample, optics, z_um, size, margin):
    """FPMForward (plane waves) of the whole region, cropped to the kept field."""
    up = optics.upsample
    n = sample.shape[0] // up
    fwd = FPMForward(optics, (n, n))
    out = fwd.intensities(torch.as_tensor(sample, dtype=torch.complex64), z_um)[0].numpy()
    return out[:, margin:margin + size, margin:margin + size]


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def _stop(shape, taper):
    from napari_fpminr.optics.slide import _raised_cosine

    return (_raised_cosine(shape[0], taper // 2, CPU)[:, None] * _raised_cosine(shape[1], taper // 2, CPU)[None]).numpy()


@pytest.mark.parametrize("z_um", [0.0, 6.0])
def test_distant_leds_on_a_flat_slide_give_the_plane_wave_forward_model(z_um):
    """LEDs ~1 km away are plane waves: the slide's images equal FPMForward's at the slide's depth.

    The LEDs sit on the region's frequency bins, where both discretize the pupil identically
    (off the bins, the compact field stop and the periodic model differ by the coherent
    imaging's finite-field error, a few per cent with a hard pupil edge).
    """
    optics0, _ = slide_optics()
    size, margin = 48, 24
    df = 1.0 / ((size + 2 * margin) * optics0.dx_lr_um)
    leds = on_grid_board(BINS, df, optics0.wavelength_um, 1e6)
    optics = optics_for(leds)
    assert FPMForward(optics, (size + 2 * margin,) * 2).on_grid
    sample = region(size, margin, optics)
    got = slide_images(sample, np.full(sample.shape, z_um), optics, leds, margin_px=margin, device=CPU)
    want = forward_crop(sample * _stop(sample.shape, margin * optics.upsample), optics, z_um, size, margin)
    assert got.shape == (len(BINS), size, size)
    assert rel(got, want) < 1e-4


def test_each_field_point_sees_its_own_local_angles():
    """A field 0.6 mm off the axis, LEDs 30 mm away: its local NAs describe it, the axis's NAs do not."""
    optics0, _ = slide_optics()
    size, margin = 24, 12
    df = 1.0 / ((size + 2 * margin) * optics0.dx_lr_um)
    leds = on_grid_board(BINS, df, optics0.wavelength_um, 30.0)  # positions relative to the field
    local = optics_for(leds)
    axis = optics_for(leds, field_mm=(-0.5, 0.35))  # the optical axis, 0.6 mm from the field
    assert np.abs(local.na_illum - axis.na_illum).max() > 0.01  # 0.6 mm / 30 mm
    sample = region(size, margin, local, seed=2)
    got = slide_images(sample, np.zeros(sample.shape), local, leds, margin_px=margin, device=CPU)
    stopped = sample * _stop(sample.shape, margin * local.upsample)
    err_local = rel(got, forward_crop(stopped, local, 0.0, size, margin))
    err_axis = rel(got, forward_crop(stopped, axis, 0.0, size, margin))
    assert err_local < 0.02  # only the wave's curvature across this 21 um field remains
    assert err_axis > 10 * err_local


def test_smooth_depth_matches_a_direct_sum_over_pixels():
    """The Chebyshev-node interpolation of the space-variant defocus against the brute-force integral."""
    optics, _ = slide_optics()
    leds = board(40.0, na_pitch=0.07)
    size, margin = 16, 8
    sample = region(size, margin, optics, seed=4)
    n = sample.shape[0]
    dx = optics.dx_hr_um
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2) * dx
    depth = 3.0 + 0.2 * xx - 0.15 * yy + 0.004 * (xx**2 + yy**2)  # steep: ~±8 µm over 28 µm
    got = slide_images(sample, depth, optics, leds, margin_px=margin, device=CPU)
    # brute force: G(k) = P(k) Σ_x v(x) exp(i kz(k) z(x)) exp(-i2π k·x), v = stop·t·exp(i2π R/λ)
    lam = optics.wavelength_um
    m = n // optics.upsample
    f = (np.arange(m) - m // 2) / (m * optics.dx_lr_um)
    fy, fx = np.meshgrid(f, f, indexing="ij")
    pupil = np.hypot(fx, fy) <= optics.na_obj / lam
    kz = 2 * math.pi * np.sqrt(1 / lam**2 - fx[pupil] ** 2 - fy[pupil] ** 2)
    v0 = sample * _stop(sample.shape, margin * optics.upsample)
    x_um = (np.arange(n) - (n - 1) / 2) * dx
    for i in (0, 4, 8):
        px, py = leds.positions_mm()[i] * 1000
        r = np.sqrt((x_um[None] - px) ** 2 + (x_um[:, None] - py) ** 2 + (leds.distance_mm * 1000 - depth) ** 2)
        v = (v0 * np.exp(2j * math.pi / lam * (r - r.mean()))).ravel()
        kern = np.exp(1j * kz[:, None] * depth.ravel()[None]
                      - 2j * math.pi * (fx[pupil][:, None] * (np.arange(n) * dx)[None].repeat(n, 0).ravel()[None]
                                        + fy[pupil][:, None] * (np.arange(n) * dx)[:, None].repeat(n, 1).ravel()[None]))
        spec = np.zeros((m, m), complex)
        spec[pupil] = kern @ v / n**2
        image = np.fft.ifft2(np.fft.ifftshift(spec)) * m * m
        want = np.abs(image[margin:margin + size, margin:margin + size]) ** 2
        assert rel(got[i], want) < 1e-3


def test_node_count_bound():
    assert chebyshev_node_count(0.0) == 1
    assert chebyshev_node_count(0.5) <= 6
    assert 6 <= chebyshev_node_count(3.0) <= 14


def test_simulate_slide_preset_truth_and_raw():
    sim = simulate("slide", size=32, seed=3, device="cpu", margin_px=16, tilt_um_per_mm=(40.0, 0.0))
    raw, truth = sim.raw, sim.truth
    assert raw.intensities.shape == (69, 32, 32) and raw.leds is not None and raw.leds.n_leds == 69
    np.testing.assert_allclose(raw.optics.na_illum, raw.leds.na_at())
    assert raw.optics.na_obj == 0.15 and raw.optics.mag == 4.0 and raw.leds.distance_mm == 30.0
    bf = raw.optics.bright_field
    assert 0.8 < raw.intensities[bf].mean() < 1.2 and raw.intensities[~bf].mean() < 0.1
    assert truth.amplitude.shape == (1, 64, 64) and truth.meta["preset"] == "slide"
    # the depth follows the tilt: 40 µm/mm across a 27.6 µm field is ~1.1 µm, increasing with x
    cols = np.nanmean(truth.depth_um, axis=0)
    ok = np.isfinite(cols)
    slope = np.polyfit(np.arange(64)[ok] * truth.dx_hr_um / 1000, cols[ok], 1)[0]
    assert abs(slope - 40.0) < 1.0
    assert truth.mask(0).sum() > 0


def test_slide_errors_are_clear():
    optics, _ = slide_optics()
    with pytest.raises(FPMInputError, match="LED board geometry"):
        simulate("slide", size=16, optics=optics)
    with pytest.raises(FPMInputError, match="bad option"):
        simulate("slide", size=16, bogus=1)


def test_cli_simulate_slide(tmp_path):
    out = tmp_path / "slide.tif"
    assert main(["simulate", str(out), "--preset", "slide", "--size", "24"]) == 0
    raw = read_raw(out)
    assert raw.intensities.shape == (69, 24, 24) and raw.leds is not None
    assert (tmp_path / "slide.truth.npz").exists()
