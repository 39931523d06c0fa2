"""Each LED's NA polished against the forward model's hard-edged pupil (last calibration step).

The forward model cuts every LED's window out of the object spectrum and multiplies it by a
hard-edged pupil disk that moves with the LED's sub-bin offset (:func:`.fit.subbin_amplitudes`).
As an LED's NA moves, its predicted image therefore changes smoothly (the sub-bin shift) *and* in
steps, each time a bin of the object spectrum crosses the disk's edge. :func:`.fit.refine_positions`
softens the edge (0.3 bins) so that its pattern search sees a smooth misfit, and the board fit
averages the NAs over all LEDs; which bins lie inside each LED's disk is decided by neither.
For an LED whose zero order lies near the pupil edge a strong low-frequency bin on the wrong side
changes its image far beyond the noise: on the simulated capture-range corner (2 mm, −6°, ×1.06)
moving one bright-field LED (NA 0.232 of 0.25) by 0.0006 NA across such a step costs the whole
reconstruction 2.96 dB (docs/benchmarks.md, capture range).

The polish evaluates every LED's hard-edged misfit (its brightness fitted in closed form) against
an object reconstructed under the current geometry, on a disk of offsets of radius
``radius_bins`` frequency bins, and moves the LED to the offset nearest its current NA among
those within ``TIE`` of the best, when the best is at least ``min_gain`` (relative) below the
current misfit and by at least ``FLOOR`` of the image's energy (below that the two patterns are
alike to the float32 rounding of a noise-free simulation). The caller judges the result as a whole (the pipeline's brightness-free misfit
and never-worse test).
"""

from __future__ import annotations

import numpy as np
import torch

from ..rawdata import RawData
from .fit import _scaled_misfit, subbin_amplitudes

__all__ = ["FLOOR", "TIE", "polish_on_bins"]

#: offsets whose misfit lies within this fraction of (current − best) above the best count as tied
#: with it; the nearest of them is taken (the smallest move that reaches the better bin pattern)
TIE = 0.1

#: a move must lower the LED's misfit by at least this fraction of its image's energy (−50 dB);
#: measured: the bin step of the module docstring lowers it by 2.9e-4, float32 rounding on exact
#: data by < 1e-6
FLOOR = 1e-5

#: float32 elements of predicted images evaluated in one batch (64 MB)
CHUNK_ELEMENTS = 1 << 24


def _offset_disk(radius_bins: float, step_bins: float) -> np.ndarray:
    """Offsets ``(M, 2)`` as ``(dx, dy)`` in bins on a square grid of ``step_bins`` within the disk."""
    g = np.arange(-radius_bins, radius_bins + 1e-9, step_bins)
    gx, gy = np.meshgrid(g, g, indexing="xy")
    offs = np.stack([gx.ravel(), gy.ravel()], axis=1)
    return offs[np.hypot(offs[:, 0], offs[:, 1]) <= radius_bins + 1e-9]


@torch.no_grad()
def polish_on_bins(field: torch.Tensor, pupil: torch.Tensor | None, z_um: float, raw: RawData, na: np.ndarray, *,
                   radius_bins: float = 0.5, step_bins: float = 0.1, min_gain: float = 0.1,
                   stop=None) -> tuple[np.ndarray, np.ndarray] | None:
    """``(na (N, 2), moved (N,) bool)``: each LED's NA moved within ``radius_bins`` to the bin
    pattern of its hard-edged pupil that explains its image best (module docstring).

    ``raw`` are the normalised data ``field`` and ``pupil`` were reconstructed from (one image per
    row of ``na``); ``None`` when ``stop()`` turned true.
    """
    h, w = raw.lr_shape
    o = raw.optics
    bin_na = np.array([o.wavelength_um / (w * o.dx_lr_um), o.wavelength_um / (h * o.dx_lr_um)])
    offs = _offset_disk(radius_bins, step_bins)
    dist = np.hypot(offs[:, 0], offs[:, 1])
    zero = int(np.argmin(dist))
    meas = torch.as_tensor(np.sqrt(np.clip(raw.intensities, 0, None)), device=field.device)
    energy = meas.double().square().sum(dim=(-2, -1)).cpu().numpy()
    na = np.asarray(na, dtype=np.float64)
    n, m = na.shape[0], offs.shape[0]
    misfit = np.empty((n, m))
    per_chunk = max(1, CHUNK_ELEMENTS // (m * h * w))  # LEDs whose offsets are evaluated in one batch
    for s0 in range(0, n, per_chunk):
        if stop is not None and stop():
            return None
        sl = slice(s0, min(s0 + per_chunk, n))
        cand = (na[sl, None, :] + offs[None] * bin_na[None, None]).reshape(-1, 2)
        pred = subbin_amplitudes(field, pupil, z_um, cand, raw)
        target = meas[sl].repeat_interleave(m, dim=0)
        misfit[sl] = _scaled_misfit(pred, target).double().cpu().numpy().reshape(-1, m)
    best = misfit.min(axis=1)
    current = misfit[:, zero]
    moved = (best < (1.0 - min_gain) * current) & (current - best > FLOOR * energy)
    out = na.copy()
    for i in np.flatnonzero(moved):
        tied = np.flatnonzero(misfit[i] <= best[i] + TIE * (current[i] - best[i]))
        out[i] = na[i] + offs[tied[np.argmin(dist[tied])]] * bin_na
    return out, moved
