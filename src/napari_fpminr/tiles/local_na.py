"""Illumination NAs seen from each tile's centre.

An LED at board position ``p`` (mm, relative to the optical axis) is seen from a field point
``f`` mm off axis as if it sat at ``p - f`` (:meth:`LEDArray.na_at`). A point 1.3 mm off centre
with the board 90 mm below sees its NAs shifted by about 1.3/90 ≈ 0.014, a sizeable part of a 0.1
objective NA: a tile away from the centre must use its own NAs.

Where the file gives the board (UConn files, native ``led_grid`` / ``led_array`` sidecars,
simulations: ``RawData.leds``) that is used. Files that carry only the NAs seen from the centre
need the board's distance (``--led-distance-mm``): each LED's position is then recovered from its
NA, ``r = d · s / sqrt(1 - s²)`` in the direction opposite to ``(na_x, na_y)`` (no glass slab).

**LEDs on the pupil edge.** An LED whose illumination NA ``|NA_i|`` is within a hair of the
objective's NA puts the sample's zero order (nearly all of a slide's light) right on the pupil's
edge: its image flips between bright and dark field with the slightest change of angle. Across a
tile the angle does change (each point sees the LED from its own place: 0.0026 NA over a 128 px
tile 30 mm above the board), and a tile's discrete spectrum places the zero order only to within
a raw frequency bin (``λ/(w·dx)`` in NA, 0.0047 for that tile). The tile's model then fits those
images badly, and the solvers spread the misfit over the whole tile as low-frequency background
errors that grow towards the tile's edges. Measured on the simulated slide (spherical waves from
30 mm; 128 px window, conventional solver, ``benchmarks`` figures in docs/benchmarks.md): with a
ring of 8 LEDs 0.5 / 1 / 1.5 / 2 / 3 bins from the pupil edge the window loses 7.8 / 1.5 / 2.5 /
1.2 / 0.5 dB against the same data without that ring. :func:`pupil_edge_leds` finds the LEDs whose
``|NA|``, over the tile's corners and centre, comes within :data:`EDGE_BAND_BINS` raw bins of the
objective NA. Tiled runs leave them out by default (``--keep-edge-leds`` keeps them); the
neighbouring LEDs' overlapping pupils cover the same part of the spectrum.
"""

from __future__ import annotations

import numpy as np

from ..errors import FPMInputError
from ..optics.led_array import LEDArray

#: half-width, in raw frequency bins of the tile, of the band around the objective NA whose LEDs a
#: tile leaves out (measured, see the module docstring)
EDGE_BAND_BINS = 2.0

__all__ = ["EDGE_BAND_BINS", "leds_from_na", "tile_leds", "local_na", "pupil_edge_leds", "corner_points_mm"]


def leds_from_na(na_illum: np.ndarray, distance_mm: float, pitch_mm: float | None = None) -> LEDArray:
    """The LED board that gives ``na_illum`` at the field centre, ``distance_mm`` below the sample.

    ``pitch_mm`` only sets the unit of the offsets (default 1 mm, positions are exact either way).
    """
    na = np.asarray(na_illum, dtype=np.float64).reshape(-1, 2)
    if not distance_mm or not distance_mm > 0:
        raise FPMInputError(f"--led-distance-mm must be positive, got {distance_mm}")
    s = np.hypot(na[:, 0], na[:, 1])
    if np.any(s >= 1.0):
        raise FPMInputError("illumination NAs must be below 1 to place the LEDs")
    r = distance_mm * s / np.sqrt(1.0 - s**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = np.where(s[:, None] > 0, -na / np.where(s[:, None] > 0, s[:, None], 1.0), 0.0)
    positions = unit * r[:, None]
    pitch = float(pitch_mm) if pitch_mm else 1.0
    return LEDArray(offsets=positions / pitch, pitch_mm=pitch, distance_mm=float(distance_mm))


def tile_leds(raw, distance_mm: float | None = None, pitch_mm: float | None = None) -> LEDArray | None:
    """The LED geometry for per-tile NAs: the file's, else one rebuilt from its NAs and ``distance_mm``."""
    if raw.leds is not None:
        if distance_mm:
            return raw.leds.replace(distance_mm=float(distance_mm))
        return raw.leds
    if distance_mm:
        return leds_from_na(raw.optics.na_illum, distance_mm, pitch_mm)
    return None


def local_na(leds: LEDArray | None, centre_mm, fallback: np.ndarray) -> np.ndarray:
    """``(N, 2)`` NAs seen from ``centre_mm``; ``fallback`` (the file's NAs) without a geometry."""
    if leds is None:
        return np.asarray(fallback, dtype=np.float64)
    return leds.na_at(centre_mm)


def corner_points_mm(centre_mm, half_size_mm) -> np.ndarray:
    """``(5, 2)`` field points: a window's centre and its four corners (``x, y`` mm)."""
    cx, cy = (float(v) for v in centre_mm)
    hx, hy = (float(v) for v in half_size_mm)
    return np.array([[cx, cy], [cx - hx, cy - hy], [cx + hx, cy - hy], [cx - hx, cy + hy], [cx + hx, cy + hy]])


def pupil_edge_leds(na_at_points: np.ndarray, na_obj: float, band_na: float) -> np.ndarray:
    """Boolean ``(N,)``: LEDs whose ``|NA|`` comes within ``band_na`` of ``na_obj`` anywhere in a window.

    ``na_at_points``: ``(K, N, 2)`` illumination NAs of the ``N`` LEDs seen from ``K`` points of the
    window (its centre and corners; one point when no board geometry is known). ``band_na``: the
    band's half-width in NA, ``EDGE_BAND_BINS · λ / (w · dx_lr)`` for a window ``w`` raw px wide.
    """
    s = np.hypot(na_at_points[..., 0], na_at_points[..., 1]).reshape(-1, na_at_points.shape[-2])
    lo, hi = s.min(axis=0) - float(band_na), s.max(axis=0) + float(band_na)
    return (lo <= float(na_obj)) & (hi >= float(na_obj))
