"""Colour arithmetic and registration helpers: known values, known shifts."""

import numpy as np
import pytest
import torch

from napari_fpminr.colour.colourmath import ciede2000, lab, srgb_uint8
from napari_fpminr.colour.register import fourier_shift, phase_correlation, register_fields, white_level
from napari_fpminr.optics.samples import band_limit

# Sharma, Wu & Dalal (2005), Table 1: pairs 1, 7, 13, 17, 25, 34
SHARMA = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
    ((50.0, 2.4900, -0.0010), (50.0, -2.4900, 0.0011), 7.2195),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082),
]


def test_ciede2000_matches_the_published_test_pairs():
    a = np.array([p[0] for p in SHARMA])
    b = np.array([p[1] for p in SHARMA])
    assert np.allclose(ciede2000(a, b), [p[2] for p in SHARMA], atol=1e-4)
    assert np.allclose(ciede2000(b, a), [p[2] for p in SHARMA], atol=1e-4)  # symmetric


def test_white_is_white_and_srgb_is_monotone():
    assert np.allclose(lab(np.ones(3)), [100.0, 0.0, 0.0], atol=1e-3)
    assert srgb_uint8(np.array([0.0, 1.0, 2.0])).tolist() == [0, 255, 255]
    ramp = srgb_uint8(np.linspace(0, 1, 1000))
    assert np.all(np.diff(ramp.astype(int)) >= 0)
    assert abs(int(srgb_uint8(np.array([0.2140]))[0]) - 128) <= 1  # mid-grey: sRGB 128 is linear 0.214


def _band_limited(shape, cutoff, seed=0):
    return band_limit(np.random.default_rng(seed).standard_normal(shape), 1.0, cutoff).real


@pytest.mark.parametrize("shift", [(0.8, -1.37), (-0.25, 0.4)])
def test_phase_correlation_finds_a_subpixel_shift_in_a_crop(shift):
    big = _band_limited((256, 256), 0.15)
    moved = fourier_shift(torch.as_tensor(big), *shift).numpy()
    a, b = big[60:156, 70:166], moved[60:156, 70:166]  # not periodic: the window matters
    dy, dx = phase_correlation(a, b, cutoff=0.15)
    assert abs(dy - shift[0]) < 0.05 and abs(dx - shift[1]) < 0.05


def test_register_fields_uses_the_phase_common_to_differently_absorbing_channels():
    # two channels: the same phase (thickness), different absorbing structures
    thickness = _band_limited((128, 128), 0.12, seed=1)
    stain_a, stain_b = _band_limited((128, 128), 0.12, seed=2), _band_limited((128, 128), 0.12, seed=3)
    ref = np.exp(0.3 * stain_a + 0.5j * thickness)
    mov = fourier_shift(torch.as_tensor(np.exp(0.3 * stain_b + 0.4j * thickness).astype(np.complex64)), 0.0, 0.8)
    dy, dx = register_fields(ref, mov.numpy(), 0.12)
    assert abs(dy) < 0.1 and abs(dx - 0.8) < 0.1


def _smear_channel(thickness, dots, dot_phase, slow_seed, n=160):
    """A channel of the UConn-like smear: shared fine thickness, absorbing dots whose reconstructed phase has
    this channel's sign, and a slow phase background of its own (what its illumination calibration leaves)."""
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
    noise = np.random.default_rng(slow_seed).standard_normal((n, n))
    slow = np.fft.ifft2(np.fft.fft2(noise) * ((k > 0.01) & (k < 0.03))).real
    o = (1 - 0.6 * dots) * np.exp(1j * (thickness + dot_phase * dots + 0.5 * slow / slow.std()))
    return band_limit(o, 1.0, 0.15)


@pytest.mark.parametrize("seeds", [(10, 11), (12, 13), (14, 15)])
def test_register_fields_locks_where_the_phases_disagree_in_sign_and_background(seeds):
    # what broke the phase correlation on the UConn smear: absorbing dots phase-bright in one channel and
    # phase-dark in the other, and a slow phase background that differs per channel
    n = 160
    thickness = _band_limited((n, n), 0.12, seed=1)
    thickness = 0.3 * thickness / thickness.std()
    yy, xx = np.mgrid[:n, :n]
    dots = np.zeros((n, n))
    for y, x in np.random.default_rng(4).uniform(8, n - 8, size=(25, 2)):
        dots += np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 3.0 ** 2))
    dots = np.clip(dots, 0, 1)
    ref = _smear_channel(thickness, dots, -0.8, seeds[0])
    moved = _smear_channel(0.85 * thickness, dots, +0.8, seeds[1])  # a longer wavelength: 0.85 × the phase
    mov = fourier_shift(torch.as_tensor(moved.astype(np.complex64)), 0.0, 0.6).numpy()
    dy, dx = register_fields(ref, mov, 0.15)
    assert abs(dy) < 0.1 and abs(dx - 0.6) < 0.1, (dy, dx)
    # the test exercises the failure: the phases themselves mis-lock here
    dy, dx = register_fields(ref, mov, 0.15, observable="phase")
    assert np.hypot(dy, dx - 0.6) > 0.2, (dy, dx)


def test_white_level_is_the_background_not_the_mean():
    rng = np.random.default_rng(0)
    img = 1.1 + 0.01 * rng.standard_normal((128, 128))
    img[:50] = 0.4 + 0.1 * rng.random((50, 128))  # 40 % stained area
    assert abs(white_level(img) - 1.1) < 0.01


def test_white_levels_find_the_glass_where_cells_cover_most_of_the_field():
    from napari_fpminr.colour.register import white_levels

    rng = np.random.default_rng(1)
    glass = np.array([3.5, 3.6, 3.2])  # per channel (not normalised: what a reconstruction gives)
    cells = np.array([2.3, 1.4, 1.7])  # red cells: absorb green and blue most
    field = np.where(rng.random((64, 64)) < 0.25, 1.0, 0.0)  # 25 % glass, 75 % cells
    img = (field[None] * glass[:, None, None] + (1 - field[None]) * cells[:, None, None]
           + 0.03 * rng.standard_normal((3, 64, 64)))
    assert np.allclose(white_levels(img), glass, atol=0.05)
    # the single-channel histogram mode would take the cells for the glass
    assert abs(white_level(img[1]) - cells[1]) < 0.05
