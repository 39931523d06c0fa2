"""Illumination off the frequency grid: FPMForward against exact tilted plane waves.

The reference does not use FPMForward's construction: it multiplies the sample (periodic on the
hr grid) by the exact tilted plane wave ``exp(i2π·k_i·x)`` on a grid M times larger in each
direction (so that the tilt, a multiple of ``Δf/M``, is periodic there), low-passes with the
analytic pupil and defocus on that M-times finer frequency grid, and samples the image at the
raw pixels.
"""

import math

import numpy as np
import pytest
import torch

from napari_fpminr.optics import FPMForward, Optics
from napari_fpminr.optics.forward import subbin_residuals

LAM, NA_OBJ, PIXEL, MAG = 0.5, 0.12, 2.0, 1.0
LR = (24, 24)
M = 4  # tilts are multiples of Δf/M


def off_grid_optics(upsample=3):
    """LEDs at n + p/M bins (p = 1, 2, 3, -1): bright field, the pupil edge, dark field."""
    df = 1.0 / (LR[0] * PIXEL / MAG)
    bins = np.array([[0.25, 0.0], [-1.5, 0.75], [2.25, -3.25], [-5.75, 4.5], [9.25, 0.25],
                     [0.5, -10.25], [-7.75, -7.5], [14.25, 2.75]])  # (kx, ky) in bins
    na = bins * df * LAM
    return Optics(wavelength_um=LAM, na_obj=NA_OBJ, mag=MAG, pixel_um=PIXEL, na_illum=na, upsample=upsample)


def exact_images(field, optics, z_um, aberration=None):
    """Raw intensities ``(N, h, w)`` of ``field`` (periodic hr sample) under exact tilted plane waves."""
    H, W = field.shape
    h, w = LR
    up = optics.upsample
    big = np.tile(field, (M, M))
    dx = optics.dx_hr_um
    y = np.arange(M * H)[:, None] * dx
    x = np.arange(M * W)[None, :] * dx
    fy = np.fft.fftfreq(M * H, dx)[:, None]
    fx = np.fft.fftfreq(M * W, dx)[None, :]
    k2 = fx**2 + fy**2
    pupil = (np.sqrt(k2) <= NA_OBJ / LAM + 1e-12).astype(complex)
    if aberration is not None:
        pupil = pupil * aberration(fy, fx)
    transfer = pupil * np.exp(1j * 2 * math.pi * np.sqrt(np.clip(1 / LAM**2 - k2, 0, None)) * z_um)
    out = []
    for na_x, na_y in optics.na_illum:
        tilted = big * np.exp(2j * math.pi * (na_x / LAM * x + na_y / LAM * y))
        image = np.fft.ifft2(np.fft.fft2(tilted) * transfer)
        out.append(np.abs(image[:h * up:up, :w * up:up]) ** 2)
    return np.stack(out)


def sample(shape, seed=3):
    rng = np.random.default_rng(seed)
    amp = 1 + 0.3 * rng.standard_normal(shape)
    return amp * np.exp(0.8j * rng.standard_normal(shape))


def rel_error(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("z_um", [0.0, 11.0])
def test_subbin_model_equals_exact_tilted_plane_waves(z_um):
    optics = off_grid_optics()
    shift = subbin_residuals(optics, LR)
    df = 1.0 / (LR[0] * optics.dx_lr_um)
    assert np.abs(shift).max() > 0.2 * df  # genuinely off the grid
    fwd = FPMForward(optics, LR)
    assert not fwd.on_grid
    field = sample(fwd.hr_shape)
    want = exact_images(field, optics, z_um)
    got = fwd.intensities(torch.as_tensor(field, dtype=torch.complex64), z_um)[0].numpy()
    snapped = FPMForward(optics, LR, subpixel=False).intensities(
        torch.as_tensor(field, dtype=torch.complex64), z_um)[0].numpy()
    assert rel_error(got, want) < 2e-5
    assert rel_error(snapped, want) > 1e-2  # what snapping costs on this sample


def test_per_led_transfer_is_the_disk_and_defocus_at_shifted_coordinates():
    optics = off_grid_optics()
    fwd = FPMForward(optics, LR)
    t = fwd.led_transfer([0.0, 5.0]).numpy()
    assert t.shape == (2, optics.n_leds, *LR)
    df = 1.0 / (LR[0] * optics.dx_lr_um)
    k = (np.arange(LR[0]) - LR[0] // 2) * df
    for i, (dy, dx) in enumerate(subbin_residuals(optics, LR)):
        ky, kx = np.meshgrid(k + dy, k + dx, indexing="ij")
        k2 = kx**2 + ky**2
        disk = np.sqrt(k2) <= NA_OBJ / LAM
        np.testing.assert_array_equal(np.abs(t[0, i]) > 0.5, disk)
        kz = 2 * math.pi * np.sqrt(np.clip(1 / LAM**2 - k2, 0, None))
        np.testing.assert_allclose(t[1, i], np.where(disk, np.exp(5j * kz), 0), atol=2e-4)
    # the shifted disks differ from the nominal one (the snapping error is visible in the pupil)
    nominal = fwd.support.numpy()
    assert any((np.abs(t[0, i]) > 0.5).sum() != nominal.sum() or
               np.any((np.abs(t[0, i]) > 0.5) != nominal) for i in range(optics.n_leds))


def test_on_grid_leds_cost_nothing_and_match_the_snapped_model():
    df = 1.0 / (LR[0] * PIXEL / MAG)
    optics = Optics(wavelength_um=LAM, na_obj=NA_OBJ, mag=MAG, pixel_um=PIXEL,
                    na_illum=np.array([[0, 0], [3, -2], [-9, 4]]) * df * LAM, upsample=3)
    fwd = FPMForward(optics, LR)
    assert fwd.on_grid and float(fwd.led_shift.abs().max()) == 0.0
    t = fwd.led_transfer(2.0)
    assert t.stride(1) == 0  # an expanded view of the single nominal transfer: no copy
    field = torch.as_tensor(sample(fwd.hr_shape), dtype=torch.complex64)
    torch.testing.assert_close(fwd.intensities(field, 2.0),
                               FPMForward(optics, LR, subpixel=False).intensities(field, 2.0))
    torch.testing.assert_close(fwd.intensities(field, 2.0)[0].double(),
                               torch.as_tensor(exact_images(field.numpy(), optics, 2.0)), atol=1e-4, rtol=1e-4)


def test_aberrated_pupil_is_first_order_and_beats_snapping():
    """A smooth aberration sampled on the raw grid: kept on its bins, the disk and defocus shifted."""
    optics0 = off_grid_optics()
    rc = NA_OBJ / LAM

    def aberration(fy, fx):  # astigmatism + coma, ~1 rad at the pupil edge
        rho2 = (fx**2 + fy**2) / rc**2
        return np.exp(1j * (0.8 * (fx**2 - fy**2) / rc**2 + 0.6 * fx / rc * (3 * rho2 - 2)))

    df = 1.0 / (LR[0] * optics0.dx_lr_um)
    k = (np.arange(LR[0]) - LR[0] // 2) * df
    ky, kx = np.meshgrid(k, k, indexing="ij")
    optics = optics0.replace(pupil=aberration(ky, kx))
    field = sample(FPMForward(optics, LR).hr_shape, seed=5)
    want = exact_images(field, optics, 3.0, aberration)
    f = torch.as_tensor(field, dtype=torch.complex64)
    sub = FPMForward(optics, LR).intensities(f, 3.0)[0].numpy()
    snap = FPMForward(optics, LR, subpixel=False).intensities(f, 3.0)[0].numpy()
    assert rel_error(sub, want) < 0.5 * rel_error(snap, want)


def test_extend_pupil_keeps_the_disk_and_copies_the_nearest_edge_bin_outside():
    optics = off_grid_optics()
    fwd = FPMForward(optics, LR)
    rng = np.random.default_rng(0)
    pupil = torch.as_tensor(rng.standard_normal(LR) + 1j * rng.standard_normal(LR), dtype=torch.complex64)
    pupil = pupil * fwd.support
    ext = fwd.extend_pupil(pupil)
    inside = fwd.support
    torch.testing.assert_close(ext[inside], pupil[inside])
    ring = ~inside & (ext != 0)
    assert ring.sum() > 0
    rows, cols = torch.nonzero(ring, as_tuple=True)
    values_inside = set(pupil[inside].tolist())
    assert all(v in values_inside for v in ext[rows, cols].tolist())
