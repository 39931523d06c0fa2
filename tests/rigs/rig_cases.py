"""Simulated foreign rigs: another lab's acquisition as a folder of 8-bit PNG frames plus a board CSV.

The rig of the issue: an even 8×8 LED board 180 mm below the sample, 8 mm pitch, NA 0.1, 3×,
3.45 µm camera pixel, 532 nm. The user writes the LED positions in their own board coordinates
(x along the board's columns, y along its rows, row by row); on the camera the board sits in one of
the 8 orientations (:mod:`napari_fpminr.optics.orientation`), and the frames are what a camera
records: scaled so that 2 % of the bright-field pixels saturate at 255, a 2 % background, Poisson
noise, rounded to 8 bits.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from napari_fpminr.optics.led_array import LEDArray
from napari_fpminr.optics.system import Optics
from napari_fpminr.rawdata import RawData
from napari_fpminr.simulate import simulate

WAVELENGTH_UM, NA_OBJ, MAG, PIXEL_UM = 0.532, 0.1, 3.0, 3.45
GRID, PITCH_MM, DISTANCE_MM = 8, 8.0, 180.0
IMPORT_ARGS = ["--led-distance-mm", str(DISTANCE_MM), "--wavelength-um", str(WAVELENGTH_UM), "--na-obj", str(NA_OBJ),
               "--mag", str(MAG), "--pixel-um", str(PIXEL_UM)]
#: the samples of the acceptance: (preset, options) — thin stained/phase cells in focus
SAMPLES = (("single", {"z_um": 0.0}),
           ("single", {"z_um": 0.0, "cells_per_100um2": 1.5, "phase_max_rad": 0.6}),
           ("single", {"z_um": 0.0, "cells_per_100um2": 0.6, "radius_um": (3.0, 6.0), "amp_min": 0.6}))


@dataclass
class Rig:
    """One simulated acquisition: the truth, and the data as the true geometry describes them."""

    stated: LEDArray
    true: LEDArray
    true_raw: RawData   # the camera's frames (file units) with the true geometry
    truth_amplitude: np.ndarray
    z_um: float


def stated_board() -> LEDArray:
    return LEDArray.grid(GRID, PITCH_MM, DISTANCE_MM, order="raster")


def optics_for(leds: LEDArray) -> Optics:
    o = Optics(wavelength_um=WAVELENGTH_UM, na_obj=NA_OBJ, mag=MAG, pixel_um=PIXEL_UM, na_illum=leds.na_at(),
               upsample=0)
    return o.replace(upsample=max(2, o.required_upsample()))


def camera_counts(intensity: np.ndarray, bright_field: np.ndarray, seed: int, *, saturated=0.02, background=0.02,
                  peak: float = 255.0) -> tuple[np.ndarray, np.ndarray]:
    """8-bit frames in which ``saturated`` of the bright-field pixels reach ``peak`` (after the noise),
    with a ``background`` of the bright-field level and Poisson noise; ``(uint8 frames, valid mask)``."""
    bf = intensity[bright_field]
    scale = peak / float(np.quantile(bf, 1.0 - saturated))
    for _ in range(60):  # the noise pushes more pixels over the top: shrink the scale until the share fits
        rng = np.random.default_rng(seed + 7)
        counts = intensity * scale
        noisy = rng.poisson(np.clip(counts + background * float(counts[bright_field].mean()), 0, None))
        frames = np.clip(noisy, 0, peak).astype(np.uint8)
        share = float(np.mean(frames[bright_field] >= peak))
        if share <= 1.25 * saturated:
            break
        scale *= 0.98
    return frames, frames < peak


def make_rig(orientation: int = 0, sample: int = 0, *, size: int = 48, seed: int = 0, shift_mm=(0.0, 0.0),
             rotation_deg: float = 0.0, height_scale: float = 1.0) -> Rig:
    """The rig with its board in ``orientation`` (and optionally misplaced) relative to its statement."""
    stated = stated_board()
    true = stated.replace(orientation=orientation, centre_mm=tuple(shift_mm), rotation_deg=rotation_deg,
                          distance_mm=DISTANCE_MM * height_scale)
    preset, opts = SAMPLES[sample]
    sim = simulate(preset, size=size, seed=seed + 11 * sample, optics=optics_for(true), leds=true, **opts)
    return Rig(stated=stated, true=true, true_raw=sim.raw, truth_amplitude=sim.truth.amplitude[0],
               z_um=float(sim.truth.z_um[0]))


def write_frames(rig: Rig, folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """PNG frames ``image1.png`` … (natural order) and ``leds.csv`` in the user's board coordinates."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    frames, _ = camera_counts(rig.true_raw.intensities, rig.true_raw.optics.bright_field, seed)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"image{i + 1}.png")
    csv_path = folder.parent / "leds.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["x_mm", "y_mm"])
        for x, y in rig.stated.positions_mm():
            w.writerow([f"{x:.4f}", f"{y:.4f}"])
    return folder, csv_path


def with_true_geometry(measured: RawData, rig: Rig) -> RawData:
    """The imported data with the true board instead of the stated one (the reference reconstruction)."""
    o = measured.optics.replace(na_illum=rig.true.na_at())
    o = o.replace(upsample=max(o.upsample, o.required_upsample()))
    return replace(measured, optics=o, leds=rig.true)
