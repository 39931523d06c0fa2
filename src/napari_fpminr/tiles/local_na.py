"""Illumination NAs seen from each tile's centre.

An LED at board position ``p`` (mm, relative to the optical axis) is seen from a field point
``f`` mm off axis as if it sat at ``p - f`` (:meth:`LEDArray.na_at`). A point 1.3 mm off centre
with the board 90 mm below sees its NAs shifted by about 1.3/90 ≈ 0.014, a sizeable part of a 0.1
objective NA: a tile away from the centre must use its own NAs.

Where the file gives the board (UConn files, native ``led_grid`` / ``led_array`` sidecars,
simulations: ``RawData.leds``) that is used. Files that carry only the NAs seen from the centre
need the board's distance (``--led-distance-mm``): each LED's position is then recovered from its
NA, ``r = d · s / sqrt(1 - s²)`` in the direction opposite to ``(na_x, na_y)`` (no glass slab).

LEDs on the pupil edge, which tiles leave out, are found by
:func:`napari_fpminr.optics.pupil_edge.pupil_edge_leds` (the physics is told there).
"""

from __future__ import annotations

import numpy as np

from ..errors import FPMInputError
from ..optics.led_array import LEDArray

__all__ = ["leds_from_na", "tile_leds", "local_na", "corner_points_mm"]


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
