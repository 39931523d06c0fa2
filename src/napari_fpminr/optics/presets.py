"""Optics presets of the simulations: the FPM-INR paper's system (λ 0.522 µm, NA 0.25, 10×).

Definitions only (an :class:`~napari_fpminr.optics.system.Optics` and its
:class:`~napari_fpminr.optics.led_array.LEDArray`); the simulations themselves, which make
:class:`~napari_fpminr.rawdata.RawData`, live in :mod:`napari_fpminr.simulate`.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import FPMInputError
from .led_array import LEDArray
from .system import Optics

__all__ = ["paper_leds", "paper_optics"]


def paper_leds(n_leds: int = 69, *, pitch_mm: float = 4.0, distance_mm: float = 70.0) -> LEDArray:
    """The ``n_leds`` LEDs nearest the centre of a square grid (ties broken in raster order), in
    raster acquisition order (row by row), ``distance_mm`` below the sample, no slab."""
    if n_leds < 1:
        raise FPMInputError(f"n_leds must be >= 1, got {n_leds}")
    half = int(math.ceil(math.sqrt(n_leds))) + 1
    j, i = np.meshgrid(np.arange(-half, half + 1), np.arange(-half, half + 1), indexing="ij")
    offsets = np.stack([i.ravel(), j.ravel()], axis=1).astype(np.float64)  # (dx, dy) in pitches
    r2 = (offsets**2).sum(axis=1)
    chosen = np.sort(np.argsort(r2, kind="stable")[:n_leds])  # raster order
    return LEDArray(offsets=offsets[chosen], pitch_mm=pitch_mm, distance_mm=distance_mm)


def paper_optics(n_leds: int = 69, *, wavelength_um: float = 0.522, na_obj: float = 0.25, mag: float = 10.0,
                 pixel_um: float = 3.45, pitch_mm: float = 4.0, distance_mm: float = 70.0,
                 upsample: int = 2) -> Optics:
    """Optics like the FPM-INR paper's simulation: λ 0.522 µm, NA 0.25, 10×, 3.45 µm pixels, 2× upsampling.

    LEDs (:func:`paper_leds`) sit on a square grid of pitch ``pitch_mm`` at ``distance_mm`` below
    the sample (no slab), illumination NA ``l/sqrt(l² + distance²)`` with the DESIGN.md sign
    ``(na_x, na_y) = -NA_ill·(cos φ, sin φ)``. With the defaults the 69 LEDs of the disk
    ``i² + j² <= 20`` reach illumination NA 0.248 (just inside the objective NA 0.25).
    """
    leds = paper_leds(n_leds, pitch_mm=pitch_mm, distance_mm=distance_mm)
    return Optics(wavelength_um=wavelength_um, na_obj=na_obj, mag=mag, pixel_um=pixel_um,
                  na_illum=leds.na_at(), upsample=upsample)
