"""Misfits and brightness shared by the calibration's candidates (:mod:`.pipeline`, :mod:`.last_steps`).

All in normalised units: ``norm`` are the measured data divided by their background level; a
candidate's data are ``norm`` corrected by its brightness and background (:func:`corrected_data`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..rawdata import RawData
from .fit import fit_brightness, subbin_amplitudes
from .model import Calibration

__all__ = ["brightness_from_field", "corrected_data", "gain_free_misfit", "led_weights", "misfit_measured"]


def misfit_measured(field, pupil, z, data_norm: RawData, cal_raw: RawData, brightness, background_norm):
    """Relative amplitude misfit against the measured (normalised) data of ``b·I_pred + background``."""
    pred = subbin_amplitudes(field, pupil, z, cal_raw.optics.na_illum, cal_raw).double()
    b = torch.as_tensor(brightness, dtype=torch.float64, device=pred.device)[:, None, None]
    # the solver normalised cal_raw by its bright-field mean: back to cal_raw's units, then to the measured
    model = torch.sqrt(b * pred.square() * cal_raw.background_level() + background_norm)
    meas = torch.as_tensor(np.sqrt(data_norm.intensities), dtype=torch.float64, device=pred.device)
    return float(torch.linalg.vector_norm(model - meas) / torch.linalg.vector_norm(meas))


def gain_free_misfit(field, pupil, z, data_norm: RawData, cal_raw: RawData) -> float:
    """Relative amplitude misfit against the measured (normalised) data with each LED's gain fitted
    in closed form to the prediction, ``g_i = <p_i, m_i> / <p_i, p_i>``: a comparison of geometries
    that no brightness estimate biases."""
    pred = subbin_amplitudes(field, pupil, z, cal_raw.optics.na_illum, cal_raw).double()
    meas = torch.as_tensor(np.sqrt(data_norm.intensities), dtype=torch.float64, device=pred.device)
    gain = (pred * meas).sum(dim=(1, 2)) / pred.square().sum(dim=(1, 2)).clamp_min(1e-30)
    return float(torch.linalg.vector_norm(gain[:, None, None] * pred - meas) / torch.linalg.vector_norm(meas))


def brightness_from_field(norm: RawData, data: RawData, obj, pupil, z: float):
    """``(b, background)`` from an object reconstructed *with* pupil recovery (the pupil's magnitude
    kept): on real data the recovered magnitude is mostly the pupil's own apodization, which a
    phase-only pupil would push into the dark-field LEDs' brightness."""
    pred = subbin_amplitudes(obj, pupil, z, data.optics.na_illum, data).square().cpu().numpy()
    pred *= data.background_level()
    return fit_brightness(pred, norm.intensities, norm.optics.bright_field)


def led_weights(data: RawData) -> np.ndarray:
    """Weights of the per-LED NAs in the global fit: the signal energy of each image (dark-field
    images at high NA carry little light and locate their LED poorly)."""
    energy = data.intensities.reshape(data.n_leds, -1).astype(np.float64).mean(1)
    return energy / max(float(energy.max()), 1e-20)


def corrected_data(norm: RawData, cal: Calibration, level: float) -> RawData:
    """Normalised data corrected by ``cal`` (its background is in file units: rescale)."""
    return cal.replace(background=cal.background / level).apply(norm)
