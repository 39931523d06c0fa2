"""The censored data term: saturated camera pixels are lower bounds, never true intensities.

Physics. A pixel where the camera saturated (``RawData.valid`` False) stored its full-well
value, not the light that reached it: the true intensity is unknown and only known to satisfy
``I_true >= I_stored``. In amplitude, a predicted ``a`` explains such a pixel whenever
``a >= sqrt(I_stored)``. Fitting the stored value as a measurement would pull the brightest
features of every bright-field image (the interference peaks that carry the most contrast) down
to the clip level, a systematic error no amount of iterating removes; leaving the pixel out
altogether would throw the bound away. The solvers keep the bound instead:

* **projection** (quasi-Newton solver, :mod:`recon.qnewton`): the estimate's amplitude ``|f|`` is
  replaced by the nearest amplitude consistent with the data, ``sqrt(I)`` at a valid pixel and
  ``max(|f|, sqrt(I))`` at a saturated one (kept when already above the bound, raised to it
  otherwise); :func:`projected_amplitude`.
* **residual** (INR losses, :mod:`recon.metrics`): at a saturated pixel only the shortfall below
  the bound counts, ``min(a - sqrt(I), 0)``; written as the prediction clipped from above,
  ``min(a, sqrt(I))`` there and ``a`` elsewhere (:func:`censored_prediction`), so every loss of
  ``(prediction, measured)`` becomes censored unchanged, with zero gradient above the bound.

Without a mask (``RawData.valid is None``, every pixel valid) the helpers return ``None`` and
the callers run their unmasked code: no cost, bit-identical results.
"""

from __future__ import annotations

import numpy as np
import torch

from ..rawdata import RawData

__all__ = ["amplitude_ceiling", "censored_prediction", "projected_amplitude", "saturated_mask"]


def saturated_mask(data: RawData, device) -> torch.Tensor | None:
    """``(N, h, w)`` float32, 1 where ``data``'s pixel saturated and 0 where valid; ``None`` when
    every pixel is valid. Float (not bool) so that it multiplies into the projection."""
    if data.valid is None:
        return None
    return torch.as_tensor(~data.valid, device=device).to(torch.float32)


def amplitude_ceiling(data: RawData, measured_amplitude: torch.Tensor) -> torch.Tensor | None:
    """``(N, h, w)`` clip level of the predicted amplitude for the censored residual: the measured
    amplitude ``sqrt(I)`` at saturated pixels, ``+inf`` at valid ones; ``None`` without a mask.

    ``measured_amplitude`` is ``sqrt`` of ``data``'s (normalized) intensities, on the device wanted.
    """
    if data.valid is None:
        return None
    valid = torch.as_tensor(np.ascontiguousarray(data.valid), device=measured_amplitude.device)
    return torch.where(valid, torch.full_like(measured_amplitude, float("inf")), measured_amplitude)


def censored_prediction(predicted_amplitude: torch.Tensor, ceiling: torch.Tensor | None) -> torch.Tensor:
    """Predicted amplitudes ``(..., h, w)`` as the censored residual sees them: ``min(a, sqrt(I))``
    at saturated pixels (a prediction above the bound agrees with the data and gets no gradient),
    ``a`` elsewhere. ``ceiling`` from :func:`amplitude_ceiling`, broadcastable; ``None``: unchanged."""
    if ceiling is None:
        return predicted_amplitude
    return torch.minimum(predicted_amplitude, ceiling)


def projected_amplitude(amplitude: torch.Tensor, measured_amplitude: torch.Tensor, saturated: torch.Tensor,
                        out: torch.Tensor) -> torch.Tensor:
    """The amplitude projection's target ``(Z, h, w)``: ``sqrt(I)`` where valid, ``max(|f|, sqrt(I))``
    where saturated. ``amplitude`` is ``|f|`` (Z, h, w), ``measured_amplitude`` ``sqrt(I)`` and
    ``saturated`` (0/1 float) are ``(h, w)``; written into ``out`` (may be ``amplitude`` itself).

    Computed as ``max(|f|·saturated, sqrt(I))``: at a valid pixel ``|f|·0 = 0 <= sqrt(I)``.
    """
    torch.mul(amplitude, saturated, out=out)
    return torch.maximum(out, measured_amplitude, out=out)
