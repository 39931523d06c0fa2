"""Field-varying lateral registration: affine resampling, local shifts, the affine fit, its use by the colour job."""

import numpy as np
import torch

from napari_fpminr.colour import job as colour_job
from napari_fpminr.colour.model import ChannelRegistration, ColourModel
from napari_fpminr.colour.affine import affine_resample, fit_affine, local_shifts
from napari_fpminr.colour.register import fourier_shift
from napari_fpminr.colour.stained import WAVELENGTHS_UM
from napari_fpminr.recon.lowrank import LowRankArchitecture, LowRankField
from napari_fpminr.recon.model import Model
from napari_fpminr.simulate import paper_optics

N = 128
BAND = 0.2  # cycles/px


def _object_spectrum(seed: int = 0) -> np.ndarray:
    """Uncentred spectrum of a band-limited weak phase/absorption object (exp(iφ)·(1 - absorption), projected)."""
    rng = np.random.default_rng(seed)
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(N), np.fft.fftfreq(N), indexing="ij"))
    smooth = lambda: np.fft.ifft2(np.fft.fft2(rng.normal(size=(N, N))) * (k < 0.6 * BAND)).real  # noqa: E731
    phi, absorb = smooth(), smooth()
    o = np.exp(1j * 0.8 * phi / phi.std()) * (1 - 0.2 * np.clip(absorb / absorb.std(), -1, 1))
    return np.fft.fft2(o) * (k < BAND)


def _evaluate(spec: np.ndarray, scale, shift) -> np.ndarray:
    """The field of ``spec`` at ``(scale_y·y + shift_y, scale_x·x + shift_x)``: direct (separable) DFT evaluation."""
    ky, kx = np.fft.fftfreq(N), np.fft.fftfreq(N)
    n = np.arange(N)
    ey = np.exp(2j * np.pi * (scale[0] * n + shift[0])[:, None] * ky[None, :])
    ex = np.exp(2j * np.pi * (scale[1] * n + shift[1])[:, None] * kx[None, :])
    return ey @ spec @ ex.T / (N * N)


def test_affine_resample_is_exact_for_scale_and_shift():
    spec = _object_spectrum()
    f = torch.as_tensor(np.fft.ifft2(spec).astype(np.complex64))
    out = affine_resample(f, np.diag([1.006, 0.997]), [0.4, -1.3]).numpy()
    direct = _evaluate(spec, (1.006, 0.997), (0.4, -1.3))
    assert np.abs(out - direct).max() <= 1e-4 * np.abs(direct).max()
    shifted = affine_resample(f, np.eye(2), [0.3, -0.7])
    assert torch.allclose(shifted, fourier_shift(f, -0.3, 0.7), atol=1e-5)


def test_local_shifts_and_affine_fit_recover_a_known_scale_and_shift():
    spec = _object_spectrum()
    reference = np.fft.ifft2(spec)
    centre = (N - 1) / 2
    s, t = np.array([1.006, 1.002]), np.array([0.8, -0.5])
    # moving(q) = reference(M⁻¹(q - b)): reference(p) = moving(p + d(p)), d(p) = t + (S - 1)·(p - centre)
    inv = 1 / s
    moving = _evaluate(spec, inv, -inv * (t + centre - s * centre))
    fit = fit_affine(local_shifts(reference, moving, BAND), (N, N), outlier_px=0.5)
    true_linear = np.diag(s - 1)
    assert np.all(np.abs(fit.shift - t) <= 0.1), fit.shift
    corners = np.array([[0, 0], [0, N - 1], [N - 1, 0], [N - 1, N - 1]]) - centre
    assert np.max(np.abs((fit.linear - true_linear) @ corners.T)) <= 0.1, fit.linear
    assert fit.rms_after < 0.3 * fit.rms_before


def _colour_model_with_scaled_red(scale) -> ColourModel:
    """Three rank-1 low-rank channels of one object; red magnified by ``scale`` about the field centre."""
    spec = _object_spectrum(1)
    centre = (N - 1) / 2
    inv = 1 / np.asarray(scale)
    fields = [_evaluate(spec, inv, -inv * (centre - np.asarray(scale) * centre)) if c == 0 else np.fft.ifft2(spec)
              for c in range(3)]
    channels, regs = [], []
    for c, lam in enumerate(WAVELENGTHS_UM):
        optics = paper_optics().replace(wavelength_um=lam, upsample=2)  # 64² raw px: 128² hr
        arch = LowRankArchitecture.for_optics(optics, (N // 2, N // 2), -2.0, 2.0, 3, 1)
        stack = torch.as_tensor(np.stack([fields[c]] * 3).astype(np.complex64))
        channels.append(Model(LowRankField.from_stack(arch, stack, np.array([-2.0, 0.0, 2.0])), optics,
                              (N // 2, N // 2)))
        regs.append(ChannelRegistration(lam, 0.0, 0.0))
    return ColourModel(tuple(channels), tuple(regs))


def test_colour_job_fits_and_bakes_the_affine_part_into_a_low_rank_channel():
    scale = (1.008, 1.003)  # 0.5 / 0.2 hr px at the corners
    model = _colour_model_with_scaled_red(scale)
    colour_job._balance_model(model)
    red = model.registration[0]
    np.testing.assert_allclose(np.reshape(red.linear, (2, 2)), np.diag(np.subtract(scale, 1)), atol=1.2e-3)
    assert model.meta["affine"][0]["applied"] and model.meta["affine"][1] is None
    up = model.upsample
    assert model.meta["residual_quadrant_shift_only_raw_px"][0] * up > 0.15  # a shift alone leaves the corners apart
    assert model.meta["residual_quadrant_raw_px"][0] * up <= 0.1  # the baked affine brings them together
    assert not model.meta["affine"][2]["applied"]  # blue is not scaled: nothing applied below the threshold
    assert model.registration[2].linear == (0.0, 0.0, 0.0, 0.0)
