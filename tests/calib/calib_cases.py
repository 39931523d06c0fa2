"""Simulated miscalibrated LED boards (the issue's acceptance case) shared by the calibration tests."""

from __future__ import annotations

import numpy as np
from napari_fpminr.simulate import paper_leds, simulate
from napari_fpminr.optics.system import Optics
from napari_fpminr.rawdata import RawData

#: the issue's case: board shifted 0.5 mm, rotated 2°, 3 % further away, ±20 % LED brightness
TRUE_SHIFT_MM = 0.5
TRUE_ROTATION_DEG = 2.0
TRUE_HEIGHT_SCALE = 1.03
BRIGHTNESS_SPREAD = 0.2


def paper_like_optics(na_illum) -> Optics:
    return Optics(wavelength_um=0.522, na_obj=0.25, mag=10.0, pixel_um=3.45, na_illum=na_illum, upsample=2)


def miscalibrated(size: int = 64, *, shift_mm=TRUE_SHIFT_MM, rotation_deg=TRUE_ROTATION_DEG,
                  height_scale=TRUE_HEIGHT_SCALE, brightness_spread=BRIGHTNESS_SPREAD, background=0.0,
                  n_leds: int = 69, seed: int = 2):
    """``(raw with the nominal board, true board, true brightness, simulation)``.

    The data are simulated with the true board (its (0, 0) LED ``shift_mm`` from the axis at 34°,
    rotated, at ``height_scale`` × the nominal 70 mm), each LED image times its brightness, plus a
    background; the RawData handed to calibration carries the nominal board and its NAs.
    """
    nominal = paper_leds(n_leds)
    angle = 0.6
    true = nominal.replace(centre_mm=(shift_mm * np.cos(angle), shift_mm * np.sin(angle)),
                           rotation_deg=rotation_deg, distance_mm=nominal.distance_mm * height_scale)
    rng = np.random.default_rng(seed + 100)
    bright = rng.uniform(1 - brightness_spread, 1 + brightness_spread, n_leds)
    sim = simulate("single", size=size, seed=seed, optics=paper_like_optics(true.na_at()), z_um=0.0)
    intens = sim.raw.intensities * bright[:, None, None].astype(np.float32) + np.float32(background)
    raw = RawData(intensities=intens, optics=paper_like_optics(nominal.na_at()), leds=nominal, z_um=0.0)
    return raw, true, bright, sim


