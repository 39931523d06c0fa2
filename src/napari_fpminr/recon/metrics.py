"""Quality measures for reconstructions.

* :func:`psnr_scaled`: PSNR after fitting the unknown global scale of the estimate by least squares
  (reconstructions are defined up to the illumination level), with the truth's maximum as peak.
* :func:`measurement_misfit`: how well hr fields explain the measurements: the relative L2 error
  ``||sqrt(I_pred) - sqrt(I_meas)|| / ||sqrt(I_meas)||`` over all LEDs and pixels, per plane, with
  ``I_pred`` from the forward model at each plane's depth (shared/DESIGN.md §1).
* :func:`measurement_residual_maps`: the same residual resolved in space, summed over the LEDs
  per raw pixel: where in the field a plane explains the measurements (depth from the data).

Both are censored at saturated pixels (``RawData.valid`` False, :mod:`recon.censor`): the camera
stored its full-well value there, so the true intensity is only known to be at least the stored
one, and the residual is the shortfall below that bound, ``min(sqrt(I_pred) - sqrt(I_meas), 0)``
(a prediction above it agrees with the data). The misfit's denominator stays the norm of all
stored amplitudes. Without a mask they are the plain residuals.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..device import resolve_device
from ..rawdata import RawData
from ..optics.forward import FPMForward
from .censor import amplitude_ceiling, censored_prediction

__all__ = ["measurement_misfit", "measurement_residual_maps", "psnr_scaled"]

_MAX_ELEMENTS = 1 << 24  # complex elements per chunk of predicted low-res fields


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def psnr_scaled(estimate, truth, mask=None) -> float:
    """PSNR (dB) of ``s·estimate`` against ``truth``, ``s`` the least-squares scale.

    Args:
        estimate, truth: real arrays of the same shape (numpy or torch).
        mask: optional boolean array (same shape) restricting fit and error to some pixels.
    Returns:
        ``10·log10(max(truth)² / mean((s·estimate - truth)²))`` over the (masked) pixels;
        ``inf`` for a perfect match.
    """
    est = _numpy(estimate).astype(np.float64)
    tru = _numpy(truth).astype(np.float64)
    if est.shape != tru.shape:
        raise ValueError(f"estimate {est.shape} and truth {tru.shape} differ in shape")
    if mask is not None:
        m = _numpy(mask).astype(bool)
        if m.shape != tru.shape:
            raise ValueError(f"mask {m.shape} does not match {tru.shape}")
        est, tru = est[m], tru[m]
    if est.size == 0:
        raise ValueError("no pixels to compare")
    denom = float(np.sum(est * est))
    scale = float(np.sum(est * tru)) / denom if denom > 0 else 0.0
    mse = float(np.mean((scale * est - tru) ** 2))
    peak = float(np.max(tru))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def _predicted_chunks(raw_normalized: RawData, field_hr, z_um, device, pupil, subpixel=True):
    """Forward model of hr fields ``(Z, H, W)`` at their depths, in plane chunks of bounded size.

    Yields ``(slice, predicted amplitudes (z, N, h, w), measured amplitudes (N, h, w))``; the
    predictions are censored at saturated pixels (clipped from above at the measured amplitude,
    :func:`~napari_fpminr.recon.censor.censored_prediction`), so ``pred - measured`` is the
    censored residual. ``pupil``: optional complex ``(h, w)`` or per-plane ``(Z, h, w)`` pupil
    replacing the optics' one (then the transfer is built here: pupil × defocus of each plane's depth).
    """
    dev = resolve_device(device)
    fwd = FPMForward(raw_normalized.optics, raw_normalized.lr_shape, dev, subpixel=subpixel)
    field = torch.as_tensor(_numpy(field_hr)).to(device=dev, dtype=torch.complex64)
    if field.ndim == 2:
        field = field[None]
    z = np.asarray(z_um, dtype=np.float64).reshape(-1)
    if field.shape[0] != z.size:
        raise ValueError(f"{field.shape[0]} fields for {z.size} depths")
    if tuple(field.shape[-2:]) != tuple(fwd.hr_shape):
        raise ValueError(f"fields are {tuple(field.shape[-2:])} hr pixels; the raw data need {tuple(fwd.hr_shape)}")
    measured = torch.as_tensor(np.sqrt(raw_normalized.intensities), device=dev)
    ceiling = amplitude_ceiling(raw_normalized, measured)
    pupils = None if pupil is None else torch.as_tensor(_numpy(pupil), device=dev).to(torch.complex64)
    h, w = raw_normalized.lr_shape
    chunk = max(1, _MAX_ELEMENTS // (raw_normalized.n_leds * h * w))
    with torch.no_grad():
        for start in range(0, z.size, chunk):
            sl = slice(start, min(start + chunk, z.size))
            p = pupils if pupils is None or pupils.ndim == 2 else pupils[sl]
            # per-LED transfers at each LED's sub-bin tilt (FPMForward.led_transfer)
            pred = censored_prediction(fwd.amplitudes(field[sl], z[sl], pupil=p), ceiling)
            yield sl, pred, measured


def measurement_misfit(raw_normalized: RawData, field_hr, z_um, device="auto", pupil=None,
                       subpixel: bool = True) -> np.ndarray:
    """Relative amplitude misfit ``(Z,)`` of hr fields ``(Z, H, W)`` at depths ``z_um`` (µm).

    ``raw_normalized`` should be :meth:`RawData.normalized` data (transparent sample ≈ 1), the
    scale the reconstructions use. ``pupil``: optional complex ``(h, w)`` or per-plane
    ``(Z, h, w)`` pupil (defaults to the optics' pupil). ``subpixel=False``: the snapped forward
    model (to judge a reconstruction made with it). At saturated pixels (``valid`` False) only a
    prediction below the measured amplitude counts (module docstring).
    """
    out = np.empty(np.asarray(z_um).size)
    norm = float(np.linalg.norm(np.sqrt(raw_normalized.intensities, dtype=np.float64)))
    for sl, pred, measured in _predicted_chunks(raw_normalized, field_hr, z_um, device, pupil, subpixel):
        out[sl] = (torch.linalg.vector_norm(pred - measured[None], dim=(1, 2, 3)) / norm).cpu().numpy()
    return out


def measurement_residual_maps(raw_normalized: RawData, field_hr, z_um, device="auto", pupil=None) -> np.ndarray:
    """Per-raw-pixel residual ``(Z, h, w)``: ``Σ_i (sqrt(I_pred,i) − sqrt(I_meas,i))²`` over the LEDs.

    ``field_hr`` ``(Z, H, W)`` complex at depths ``z_um`` (µm), predicted through the forward
    model at each plane's own depth; ``raw_normalized`` and ``pupil`` as in
    :func:`measurement_misfit` (e.g. a model's recovered pupil). Where a plane holds the sample's
    in-focus field, the residual there is smallest: the physics-based focus measure of
    :func:`napari_fpminr.volume.all_in_focus` (``measure="data"``), which needs no sharpness of
    the slices themselves. Saturated pixels (``valid`` False) count only a prediction below the
    measured amplitude (module docstring).
    """
    h, w = raw_normalized.lr_shape
    out = np.empty((np.asarray(z_um).size, h, w), dtype=np.float64)
    for sl, pred, measured in _predicted_chunks(raw_normalized, field_hr, z_um, device, pupil):
        out[sl] = (pred - measured[None]).square().sum(1).double().cpu().numpy()
    return out
