"""Synthetic thin samples for simulation: sparse "cells" on a transparent background.

A thin sample is described by its complex transmittance ``t(x, y) = a · exp(i·φ)`` on the hr
grid (pixel ``dx_um``). The generators here return numpy ``complex128`` arrays and are
deterministic for a given ``numpy.random.Generator`` state.

Cell model (loosely a blood smear): each cell is a soft-edged ellipse (semi-axes drawn from
``radius_um``, random orientation) that absorbs a fraction ``α ∈ [0.1, 1 - amp_min]`` of the
amplitude and delays the phase by up to ``phase_max_rad``, with a thicker rim (red-blood-cell-like
``0.6 + 0.4·ρ²`` profile, ``ρ`` the normalized elliptical radius); a few small granules add fine
detail, and a smooth random texture (correlation length ~0.3 µm, i.e. near the resolution limit
of the paper's synthetic NA 0.5) modulates the inside of the cells. Overlapping cells add their
absorption and phase, clipped so that the amplitude stays in ``[amp_min, 1]`` and the phase in
``[0, phase_max_rad]``. Positions wrap around the field (the FFT-based model is periodic too).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["band_limit", "cell_layer", "structure_mask"]


def _smooth_noise(shape: tuple[int, int], dx_um: float, corr_um: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with a Gaussian correlation of ``corr_um``."""
    h, w = shape
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(h, dx_um)[:, None]
    fx = np.fft.fftfreq(w, dx_um)[None, :]
    filt = np.exp(-2.0 * (math.pi * corr_um) ** 2 * (fx**2 + fy**2))
    field = np.fft.ifft2(np.fft.fft2(white) * filt).real
    std = field.std()
    return field / std if std > 0 else field


def cell_layer(
    shape: tuple[int, int],
    dx_um: float,
    rng: np.random.Generator,
    *,
    cells_per_100um2: float = 0.5,
    radius_um: tuple[float, float] = (1.5, 3.5),
    granules_per_100um2: float = 1.5,
    amp_min: float = 0.3,
    phase_max_rad: float = 1.0,
    min_cells: int = 2,
) -> np.ndarray:
    """Complex transmittance ``(H, W)`` of one sparse layer of cells (see module docstring).

    Args:
        shape: hr grid ``(H, W)``.
        dx_um: hr pixel size (µm).
        rng: random generator (the only source of randomness).
        cells_per_100um2: mean number of cells per 100 µm² of field.
        radius_um: range of the cell semi-axes (µm).
        granules_per_100um2: mean number of small (0.3–0.7 µm) granules per 100 µm².
        amp_min: smallest amplitude (strongest absorption).
        phase_max_rad: largest phase delay (rad).
        min_cells: at least this many cells, however small the field.
    """
    h, w = int(shape[0]), int(shape[1])
    area_100um2 = h * w * dx_um**2 / 100.0
    n_cells = max(min_cells, int(rng.poisson(cells_per_100um2 * area_100um2)))
    n_gran = int(rng.poisson(granules_per_100um2 * area_100um2))
    r_min, r_max = radius_um
    centres = rng.uniform(0.0, 1.0, size=(n_cells + n_gran, 2)) * np.array([h, w])
    semi = np.concatenate([
        rng.uniform(r_min, r_max, size=(n_cells, 1)) * rng.uniform(0.8, 1.0, size=(n_cells, 2)),
        rng.uniform(0.3, 0.7, size=(n_gran, 1)) * rng.uniform(0.7, 1.0, size=(n_gran, 2)),
    ]) / dx_um  # semi-axes in hr pixels
    angle = rng.uniform(0.0, math.pi, size=n_cells + n_gran)
    absorb = rng.uniform(0.1, 1.0 - amp_min, size=n_cells + n_gran)
    phase = rng.uniform(0.3, 1.0, size=n_cells + n_gran) * phase_max_rad
    edge_px = max(0.6, 0.15 / dx_um)  # soft edge width ~0.15 µm

    absorption = np.zeros((h, w))
    delay = np.zeros((h, w))
    # one local patch per cell (loop over cells, vectorized over the pixels of each patch)
    for (cy, cx), (sa, sb), th, al, ph in zip(centres, semi, angle, absorb, phase, strict=True):
        half = int(math.ceil(max(sa, sb) + 3 * edge_px)) + 1
        rows = np.arange(int(cy) - half, int(cy) + half + 1)
        cols = np.arange(int(cx) - half, int(cx) + half + 1)
        yy = rows[:, None] - cy
        xx = cols[None, :] - cx
        u = (xx * math.cos(th) + yy * math.sin(th)) / sa
        v = (-xx * math.sin(th) + yy * math.cos(th)) / sb
        rho = np.sqrt(u**2 + v**2)
        inside = 0.5 * (1.0 - np.tanh((rho - 1.0) * min(sa, sb) / edge_px))
        idx = np.ix_(rows % h, cols % w)
        np.add.at(absorption, idx, al * inside)
        np.add.at(delay, idx, ph * inside * (0.6 + 0.4 * np.minimum(rho, 1.0) ** 2))

    texture = _smooth_noise((h, w), dx_um, 0.3, rng)
    absorption = np.clip(absorption * (1.0 + 0.15 * texture), 0.0, 1.0 - amp_min)
    delay = np.clip(delay * (1.0 + 0.15 * texture), 0.0, phase_max_rad)
    return (1.0 - absorption) * np.exp(1j * delay)


def band_limit(field: np.ndarray, dx_um: float, cutoff_cycles_per_um: float) -> np.ndarray:
    """Keep only spatial frequencies ``|k| <= cutoff`` (hard disk) of a complex ``(..., H, W)`` field."""
    h, w = field.shape[-2:]
    fy = np.fft.fftfreq(h, dx_um)[:, None]
    fx = np.fft.fftfreq(w, dx_um)[None, :]
    keep = np.hypot(fx, fy) <= cutoff_cycles_per_um + 1e-12
    return np.fft.ifft2(np.fft.fft2(field, axes=(-2, -1)) * keep, axes=(-2, -1))


def structure_mask(transmittance: np.ndarray, threshold: float = 0.02) -> np.ndarray:
    """Boolean map of pixels where a thin layer differs from transparent (``|t - 1| > threshold``)."""
    return np.abs(transmittance - 1.0) > threshold
