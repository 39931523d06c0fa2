"""Metrics: scale-fitted PSNR and measurement misfit."""

import math

import numpy as np
import pytest
import torch

from napari_fpminr.simulate import simulate
from napari_fpminr.recon.metrics import measurement_misfit, psnr_scaled


def test_psnr_fits_the_global_scale_and_uses_the_truth_peak():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.2, 2.0, size=(40, 50))
    assert psnr_scaled(3.5 * truth, truth) > 200  # exact up to round-off
    assert psnr_scaled(truth, truth) == math.inf
    noise = rng.standard_normal(truth.shape)
    noise *= 0.05 / noise.std()
    est = 0.5 * (truth + noise)
    # LS scale is ~2; the residual is the (nearly orthogonal) noise
    expected = 10 * math.log10(truth.max() ** 2 / 0.05**2)
    assert psnr_scaled(est, truth) == pytest.approx(expected, abs=0.2)
    # torch input and a mask restricting the comparison
    mask = np.zeros(truth.shape, bool)
    mask[:10] = True
    bad = est.copy()
    bad[10:] = 0.0
    assert psnr_scaled(torch.as_tensor(bad), truth, mask) == pytest.approx(
        psnr_scaled(est[:10], truth[:10]), abs=1e-9)
    with pytest.raises(ValueError):
        psnr_scaled(est, truth[:-1])


def test_measurement_misfit_is_zero_for_the_true_field_and_grows_off_focus():
    sim = simulate("single", size=24, seed=0, z_um=3.0)
    raw = sim.raw  # simulated intensities are already on the transparent = 1 scale
    truth = sim.truth.amplitude[0] * np.exp(1j * sim.truth.phase[0])
    misfit = measurement_misfit(raw, np.stack([truth, truth]), [3.0, 15.0], device="cpu")
    assert misfit.shape == (2,)
    assert misfit[0] < 0.01  # only the band-limit/snap error of the truth
    assert misfit[1] > 10 * misfit[0]
    # a per-plane pupil equal to the ideal one gives the same number
    from napari_fpminr.optics import FPMForward
    pupil = FPMForward(raw.optics, raw.lr_shape).pupil.numpy()
    same = measurement_misfit(raw, truth[None], [3.0], device="cpu", pupil=pupil[None])
    assert same[0] == pytest.approx(misfit[0], rel=1e-4)
