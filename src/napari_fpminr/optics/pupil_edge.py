"""LEDs on the pupil edge: which illumination NAs a reconstruction cannot model reliably.

An LED whose illumination NA ``|NA_i|`` is within a hair of the
objective's NA puts the sample's zero order (nearly all of a slide's light) right on the pupil's
edge: its image flips between bright and dark field with the slightest change of angle. Across a
tile the angle does change (each point sees the LED from its own place: 0.0026 NA over a 128 px
tile 30 mm above the board), and a tile's discrete spectrum places the zero order only to within
a raw frequency bin (``λ/(w·dx)`` in NA, 0.0047 for that tile). The tile's model then fits those
images badly, and the solvers spread the misfit over the whole tile as low-frequency background
errors that grow towards the tile's edges. Measured on the simulated slide (spherical waves from
30 mm; 128 px window, conventional solver with a constant step, docs/benchmarks.md): with a ring of
8 LEDs 0.5 / 1 / 1.5 / 2 / 3 bins from the pupil edge the window loses 7.8 / 1.5 / 2.5 / 1.2 / 0.5 dB
against the same data without that ring. LEDs a few bins further in still hurt: on one tile of the
1024² slide an LED 3.3–4.3 bins inside the edge costs 8 dB with a constant step and 2 dB with the
adaptive step tiles use. :func:`pupil_edge_leds` finds the LEDs whose ``|NA|``, over the tile's
corners and centre, comes within :data:`EDGE_BAND_BINS` raw bins of the objective NA. Tiled runs
leave them out by default (``--keep-edge-leds`` keeps them); the neighbouring LEDs' overlapping
pupils cover the same part of the spectrum. The band, measured on the 1024² slide (adaptive step,
25 passes; seams / edge tiles' amplitude PSNR): 2 bins 42.3 / 40.7–43.5 dB, 2.5 bins 42.9 /
41.9–44.7, **3 bins** 43.2 / 41.9–44.7, 4 bins 43.4 / 42.8–44.7 dB, leaving out 7.7 / 8.7 / 9.6 / 10.6
of 69 LEDs per tile on average. 3 bins takes most of the gain while keeping LEDs for sparser boards.

The same LEDs bias the object estimate that illumination self-calibration refines the LED angles
against (:mod:`napari_fpminr.calib.pipeline`): there they are left out of that object only, and
their own angles are then refined against it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["EDGE_BAND_BINS", "edge_band_na", "pupil_edge_leds"]

#: half-width, in raw frequency bins of the window, of the band around the objective NA whose LEDs
#: count as on the pupil edge (measured, see the module docstring; 2 before the adaptive step)
EDGE_BAND_BINS = 3.0


def edge_band_na(wavelength_um: float, width_px: int, dx_lr_um: float, bins: float = EDGE_BAND_BINS) -> float:
    """The band's half-width in NA for a window ``width_px`` raw px wide: ``bins · λ / (w · dx)``."""
    return float(bins) * float(wavelength_um) / (int(width_px) * float(dx_lr_um))


def pupil_edge_leds(na_at_points: np.ndarray, na_obj: float, band_na: float) -> np.ndarray:
    """Boolean ``(N,)``: LEDs whose ``|NA|`` comes within ``band_na`` of ``na_obj`` anywhere in a window.

    ``na_at_points``: ``(K, N, 2)`` illumination NAs of the ``N`` LEDs seen from ``K`` points of the
    window (its centre and corners; one point when no board geometry is known). ``band_na``: the
    band's half-width in NA, ``EDGE_BAND_BINS · λ / (w · dx_lr)`` for a window ``w`` raw px wide.
    """
    s = np.hypot(na_at_points[..., 0], na_at_points[..., 1]).reshape(-1, na_at_points.shape[-2])
    lo, hi = s.min(axis=0) - float(band_na), s.max(axis=0) + float(band_na)
    return (lo <= float(na_obj)) & (hi >= float(na_obj))
