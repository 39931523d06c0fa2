"""Forward model physics against analytic cases and an independent numpy implementation."""

import math

import numpy as np
import pytest
import torch

from napari_fpminr.optics import FPMForward, Optics, angular_spectrum


def grid_optics(n_side=5, na_obj=0.1, wavelength_um=0.5, pixel_um=2.0, mag=1.0, spacing_na=0.05):
    """LEDs on a square grid of illumination NAs (na_x, na_y)."""
    c = (np.arange(n_side) - n_side // 2) * spacing_na
    nx, ny = np.meshgrid(c, c)
    na = np.stack([nx.ravel(), ny.ravel()], axis=1)
    return Optics(wavelength_um=wavelength_um, na_obj=na_obj, mag=mag, pixel_um=pixel_um, na_illum=na)


def test_transparent_sample_is_uniform_bright_and_dark_field():
    optics = grid_optics(spacing_na=0.06)  # no LED near the pupil edge
    fwd = FPMForward(optics, (32, 32))
    field = torch.ones(fwd.hr_shape, dtype=torch.complex64)
    intensity = fwd.intensities(field, 0.0)[0].numpy()
    bf = optics.bright_field
    assert bf.sum() == 9 and (~bf).sum() == 16
    np.testing.assert_allclose(intensity[bf], 1.0, atol=1e-5)
    np.testing.assert_allclose(intensity[~bf], 0.0, atol=1e-6)
    # defocus does not change a plane wave's intensity
    np.testing.assert_allclose(fwd.intensities(field, 7.5)[0].numpy()[bf], 1.0, atol=1e-4)


def test_grating_is_seen_only_by_leds_whose_window_contains_its_frequency():
    optics = grid_optics(n_side=7, spacing_na=0.04)
    h = w = 32
    fwd = FPMForward(optics, (h, w))
    H, W = fwd.hr_shape
    df = 1 / (w * optics.dx_lr_um)
    order_bin = 19  # grating frequency 19 bins: beyond the objective cut-off
    assert order_bin * df > optics.na_obj / optics.wavelength_um
    x = np.arange(W) * optics.dx_hr_um
    grating = 1.0 + 0.2 * np.cos(2 * math.pi * order_bin * df * x)
    field = torch.as_tensor(np.repeat(grating[None, :], H, 0))
    intensity = fwd.intensities(field, 0.0)[0].numpy()

    # which of the object frequencies {0, +order, -order} fall in each LED's pupil-limited window
    support = fwd.support.numpy()
    offset_y = (fwd.window_top.numpy() + h // 2 - H // 2)
    offset_x = (fwd.window_left.numpy() + w // 2 - W // 2)

    def passes(bin_x):
        px, py = bin_x - offset_x + w // 2, 0 - offset_y + h // 2
        inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
        return inside & support[np.clip(py, 0, h - 1), np.clip(px, 0, w - 1)]

    n_passed = passes(0).astype(int) + passes(order_bin) + passes(-order_bin)
    lit = intensity.mean(axis=(1, 2)) > 1e-6
    fringes = intensity.std(axis=(1, 2)) > 1e-6
    assert 0 < (passes(order_bin) | passes(-order_bin)).sum() < optics.n_leds  # a real selection
    np.testing.assert_array_equal(lit, n_passed >= 1)
    np.testing.assert_array_equal(fringes, n_passed >= 2)
    # a dark-field LED that passes one order sees it as a uniform level 0.1^2
    one = (n_passed == 1) & ~passes(0)
    assert one.any()
    np.testing.assert_allclose(intensity[one].mean(axis=(1, 2)), 0.01, rtol=1e-3)


def test_defocus_equals_angular_spectrum_propagation_for_on_axis_led():
    optics = grid_optics(n_side=3)
    fwd = FPMForward(optics, (32, 32))
    rng = np.random.default_rng(1)
    field = torch.as_tensor(
        (1 + 0.3 * rng.standard_normal(fwd.hr_shape)) * np.exp(1j * rng.standard_normal(fwd.hr_shape)),
        dtype=torch.complex64,
    )
    on_axis = int(np.argmin(optics.na_illum_abs))
    z = 6.0
    predicted = fwd.lowres_fields(field, z, leds=[on_axis])[0, 0]
    # angular spectrum propagation of the pupil-band-limited field, sampled at raw pixels
    propagated = angular_spectrum(field, z, optics.wavelength_um, optics.dx_hr_um, na_limit=optics.na_obj)
    up = optics.upsample
    expected = propagated[::up, ::up]
    err = (predicted - expected).abs().max().item() / expected.abs().max().item()
    assert err < 1e-4


def numpy_forward(field, optics, lr_shape, z_um):
    """Independent, loop-based reference: crop, pupil, defocus, inverse FFT per LED."""
    h, w = lr_shape
    H, W = field.shape
    spec = np.fft.fftshift(np.fft.fft2(field)) / (H * W)
    dk_y, dk_x = 1 / (h * optics.dx_lr_um), 1 / (w * optics.dx_lr_um)
    ky = (np.arange(h) - h // 2) * dk_y
    kx = (np.arange(w) - w // 2) * dk_x
    KY, KX = np.meshgrid(ky, kx, indexing="ij")
    pupil = (np.sqrt(KX**2 + KY**2) <= optics.na_obj / optics.wavelength_um).astype(complex)
    kz = 2 * np.pi * np.sqrt(np.maximum(1 / optics.wavelength_um**2 - KX**2 - KY**2, 0))
    out = []
    for na_x, na_y in optics.na_illum:
        cy = H // 2 + int(round(-na_y / optics.wavelength_um / dk_y))
        cx = W // 2 + int(round(-na_x / optics.wavelength_um / dk_x))
        win = spec[cy - h // 2: cy - h // 2 + h, cx - w // 2: cx - w // 2 + w]
        lr = np.fft.ifft2(np.fft.ifftshift(win * pupil * np.exp(1j * kz * z_um * (pupil != 0)))) * h * w
        out.append(np.abs(lr) ** 2)
    return np.stack(out)


@pytest.mark.parametrize("z_um", [0.0, -9.0])
def test_batched_forward_matches_independent_numpy_loop(z_um):
    optics = grid_optics(n_side=5, spacing_na=0.045)
    lr = (24, 20)
    fwd = FPMForward(optics, lr, subpixel=False)  # the reference loop snaps every LED to its bin
    rng = np.random.default_rng(2)
    field = (1 + 0.2 * rng.standard_normal(fwd.hr_shape)) * np.exp(0.5j * rng.standard_normal(fwd.hr_shape))
    got = fwd.intensities(torch.as_tensor(field, dtype=torch.complex64), z_um)[0].numpy()
    want = numpy_forward(field, optics, lr, z_um)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5 * want.max())


def test_several_z_and_led_subset_in_one_call():
    optics = grid_optics()
    fwd = FPMForward(optics, (16, 16))
    field = torch.randn(fwd.hr_shape, dtype=torch.complex64)
    z = torch.tensor([-3.0, 0.0, 4.0])
    full = fwd.intensities(field, z)
    assert full.shape == (3, optics.n_leds, 16, 16)
    sub = fwd.intensities(field, z, leds=[3, 7])
    torch.testing.assert_close(sub, full[:, [3, 7]])
    per_plane = fwd.intensities(field[None].expand(3, -1, -1), z)
    torch.testing.assert_close(per_plane, full)


def test_window_outside_spectrum_is_a_clear_error():
    optics = grid_optics(spacing_na=0.2).replace(upsample=2)
    with pytest.raises(ValueError, match="upsample >="):
        FPMForward(optics, (16, 16))


def test_auto_upsample_satisfies_design_rule():
    optics = grid_optics(n_side=9, spacing_na=0.05)  # NA_ill up to 0.28
    need = 1 + 2 * optics.na_illum_abs.max() * optics.dx_lr_um / optics.wavelength_um
    assert optics.upsample >= need and optics.upsample - 1 < need
