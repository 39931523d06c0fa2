"""A quick consistency check of a measurement against its stated geometry (``fpminr info --check``).

What it looks at, cheapest first:

* **saturation**: the share of bright-field pixels the camera clipped (``RawData.valid``);
* **background**: the level of the darkest frames' typical pixel, relative to the bright-field
  level (camera offset, stray light: the dark-field images' floor);
* **bright or dark against the statement**: a frame is bright when its LED's zero order passes
  the pupil. LEDs whose measured brightness contradicts the stated geometry (well inside the
  bright field but dark, or well outside but bright) are named — a dead LED, a wrong order, or
  a board that is not where the file says;
* **orientation**: the global board search (:mod:`.board_search`);
* **frames the model cannot fit**: a short reconstruction on a central crop (with the search's
  placement when it beats the statement) and each frame's relative amplitude misfit with its
  brightness fitted in closed form; frames far above their group's (bright or dark field) typical
  misfit are named — a flickering LED, a frame from another exposure, an LED off its stated place;
* **brightness outliers**: bright-field frames far brighter or darker than the others (a doubled
  exposure is explained by brightness, not a misfit; calibration corrects it).

Each finding is a plain sentence; :func:`check_measurement` returns them with the options to use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..device import resolve_device
from ..optics import orientation as board_orientation
from ..rawdata import RawData
from .board_search import BoardSearch, choose_twin, measured_brightness, search_board
from .fit import quick_field, subbin_amplitudes

__all__ = ["CheckReport", "background_floor", "subtract_background", "check_measurement", "frame_misfits", "outlier_frames"]

#: a frame whose misfit exceeds its group's median by this factor (and by 6 robust deviations) cannot be fitted
OUTLIER_FACTOR = 5.0
#: a bright-field frame this many times brighter or darker than the median one is named
BRIGHTNESS_OUTLIER = 1.5


@dataclass
class CheckReport:
    """What :func:`check_measurement` found; :meth:`lines` says it in plain words."""

    source: str
    n_leds: int
    saturated_fraction: float
    background_fraction: float | None
    contradictions: list[tuple[int, str]] = field(default_factory=list)
    orientation: int = 0
    orientation_margin: float = 0.0
    orientation_twin_note: str = ""
    bad_frames: list[tuple[int, str]] = field(default_factory=list)
    brightness_outliers: list[tuple[int, float]] = field(default_factory=list)
    misfit_stated: float = float("nan")
    misfit_searched: float = float("nan")
    suggestions: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"check of {self.source}: {self.n_leds} frames"]
        out.append(f"saturation:   {100 * self.saturated_fraction:.1f} % of bright-field pixels clipped"
                   + (" (left out of the data term)" if self.saturated_fraction > 0 else ""))
        if self.background_fraction is None:
            out.append("background:   not measured (too few frames far in the dark field)")
        else:
            out.append(f"background:   {100 * self.background_fraction:.2f} % of the bright-field level in the darkest "
                       "frames" + (" (subtracted by default)" if self.background_fraction > 0.002 else ""))
        if self.orientation == 0:
            out.append("orientation:  the board sits as stated" + self.orientation_twin_note)
        else:
            out.append(f"orientation:  the stated board is {board_orientation.describe(self.orientation)} relative to "
                       f"the camera{self.orientation_twin_note}")
        if self.contradictions:
            out.append("bright/dark:  " + "; ".join(f"LED {i}: {why}" for i, why in self.contradictions))
        else:
            out.append("bright/dark:  every frame is as bright or dark as the geometry found predicts")
        if self.bad_frames:
            out.append("cannot fit:   " + "; ".join(f"LED {i}: {why}" for i, why in self.bad_frames))
        if self.brightness_outliers:
            out.append("brightness:   " + "; ".join(f"LED {i} at {b:.2f}x the other bright-field frames (corrected "
                                                      "by calibration)" for i, b in self.brightness_outliers))
        if math.isfinite(self.misfit_stated):
            out.append(f"misfit:       {self.misfit_stated:.4f} with the stated geometry, {self.misfit_searched:.4f} "
                       "with the geometry found (quick reconstruction of a central crop)")
        for s in self.suggestions:
            out.append(f"suggestion:   {s}")
        return out

    def text(self) -> str:
        return "\n".join(self.lines())


def subtract_background(raw: RawData, level: float) -> RawData:
    """``raw`` with ``level`` (file units) taken off every frame, clipped at 0."""
    if not level:
        return raw
    return replace(raw, intensities=np.clip(raw.intensities - np.float32(level), 0.0, None))


#: frames used for the background floor: measured dark and stated this far beyond the objective NA
FAR_DARK_FIELD = 1.3
MIN_FAR_FRAMES = 4


def background_floor(raw: RawData) -> float | None:
    """The camera's background (file units): the smallest mean of the far dark-field frames.

    Frames measured dark whose stated NA lies well beyond the pupil (``FAR_DARK_FIELD`` × the
    objective NA) carry almost no scattered light, so the smallest of their means is the offset and
    stray light common to every frame (measured on the simulated 8-bit rig: 3.96 counts for a true
    3.95, where a low percentile of the pixels is pulled down by shot noise to 3.0). Frames just past
    the pupil edge are left out: a scattering sample makes them far brighter than any background
    (taking them cost 13 dB on a board whose LEDs all sit near the edge). ``None`` with fewer than
    ``MIN_FAR_FRAMES`` such frames.
    """
    _, bright = measured_brightness(raw)
    far = np.flatnonzero(~bright & (raw.optics.na_illum_abs > FAR_DARK_FIELD * raw.optics.na_obj))
    if far.size < MIN_FAR_FRAMES:
        return None
    return float(raw.intensities[far].reshape(far.size, -1).mean(1).min())


def background_fraction(raw: RawData) -> float | None:
    """Typical pixel of the darkest dark-field frames, relative to the bright-field level (``None``
    without frames measured dark: every LED lights the bright field)."""
    floor = background_floor(raw)
    if floor is None:
        return None
    means = raw.intensities.reshape(raw.n_leds, -1).mean(1)
    level = float(np.median(np.sort(means)[-max(1, int(raw.optics.bright_field.sum())):]))
    return max(floor, 0.0) / max(level, 1e-30)


def brightness_outliers(raw: RawData, na_illum: np.ndarray, factor: float = 1.5) -> list[tuple[int, float]]:
    """Bright-field frames whose mean is ``factor`` × above or below the bright-field median (an LED at
    another brightness or exposure). Measured on the frames directly: a reconstruction with pupil
    recovery would absorb an LED's brightness into the pupil."""
    rel, bright = measured_brightness(raw)
    inside = bright & (np.hypot(na_illum[:, 0], na_illum[:, 1]) < raw.optics.na_obj)
    if inside.sum() < 3:
        return []
    ratio = rel / float(np.median(rel[inside]))
    return [(int(i), float(ratio[i])) for i in np.flatnonzero(inside & ((ratio > factor) | (ratio < 1 / factor)))]


def brightness_contradictions(raw: RawData, na_illum: np.ndarray, edge_bins: float = 0.25) -> list[tuple[int, str]]:
    """LEDs measured bright though their NA lies clearly outside the pupil, or dark though clearly inside."""
    rel, bright = measured_brightness(raw)
    h, w = raw.lr_shape
    bin_na = raw.optics.wavelength_um / (min(h, w) * raw.optics.dx_lr_um)
    na_abs = np.hypot(na_illum[:, 0], na_illum[:, 1])
    inside = na_abs < raw.optics.na_obj - edge_bins * bin_na
    outside = na_abs > raw.optics.na_obj + edge_bins * bin_na
    out = []
    for i in np.flatnonzero(inside & ~bright):
        out.append((int(i), f"dark ({rel[i]:.2f} of the bright-field level) though in the bright field (NA {na_abs[i]:.3f})"))
    for i in np.flatnonzero(outside & bright):
        out.append((int(i), f"bright ({rel[i]:.2f}) though in the dark field (NA {na_abs[i]:.3f})"))
    return sorted(out)


def frame_misfits(raw: RawData, z_um: float, *, iterations: int = 15, device="auto") -> np.ndarray:
    """``(N,)``: each frame's relative amplitude misfit to a quick reconstruction of ``raw`` (normalised,
    any size: crop it first), its brightness fitted in closed form."""
    dev = resolve_device(device)
    norm = raw.normalized()
    with torch.no_grad():
        got = quick_field(norm, z_um, iterations=iterations, pupil_update=True, device=dev)
        obj, pupil = got
        pred = subbin_amplitudes(obj, pupil, z_um, norm.optics.na_illum, norm).double()
        meas = torch.as_tensor(np.sqrt(norm.intensities), dtype=torch.float64, device=pred.device)
        if norm.valid is not None:  # saturated pixels: only a shortfall below the clipped value counts
            valid = torch.as_tensor(norm.valid, device=pred.device)
        else:
            valid = None
        pm = (pred * meas).sum(dim=(-2, -1))
        pp = (pred * pred).sum(dim=(-2, -1)).clamp_min(1e-30)
        scale = (pm / pp)[:, None, None]
        resid = scale * pred - meas
        if valid is not None:
            resid = torch.where(valid, resid, resid.clamp_max(0.0))
        energy = (meas * meas).sum(dim=(-2, -1)).clamp_min(1e-30)
        return torch.sqrt((resid * resid).sum(dim=(-2, -1)) / energy).cpu().numpy()


def outlier_frames(misfit: np.ndarray, bright_field: np.ndarray) -> np.ndarray:
    """Indices of frames whose misfit stands far above their group's (bright / dark field): more than
    :data:`OUTLIER_FACTOR` × the group median and 6 robust deviations (MAD) of ``log misfit``."""
    out = []
    logm = np.log(np.maximum(misfit, 1e-12))
    for group in (np.asarray(bright_field, bool), ~np.asarray(bright_field, bool)):
        idx = np.flatnonzero(group)
        if idx.size < 4:
            continue
        med = np.median(logm[idx])
        mad = 1.4826 * np.median(np.abs(logm[idx] - med)) + 1e-6
        bad = idx[(logm[idx] > med + max(6.0 * mad, math.log(OUTLIER_FACTOR)))]
        out.extend(bad.tolist())
    return np.asarray(sorted(out), dtype=np.int64)


def _central(raw: RawData, crop_px: int) -> RawData:
    h, w = raw.lr_shape
    if raw.optics.pupil is not None or (h <= crop_px and w <= crop_px):
        return raw
    ch, cw = min(h, crop_px), min(w, crop_px)
    return raw.crop((h - ch) // 2, (w - cw) // 2, ch, cw)


def _twin_note(found: BoardSearch) -> str:
    if found.margin < 0.15:
        return f" (weak evidence: margin {found.margin:.2f}; check the sample has structure in the bright-field frames)"
    return ""


def check_measurement(raw: RawData, *, z_um: float | None = None, crop_px: int = 64, iterations: int = 15,
                      device="auto") -> CheckReport:
    """Check ``raw`` against its stated geometry (module docstring)."""
    from .model import Calibration

    z = float(raw.z_um if z_um is None and raw.z_um is not None else (z_um or 0.0))
    floor = background_floor(raw)
    background = background_fraction(raw)
    if floor and floor > 0.002 * raw.background_level():
        raw = subtract_background(raw, floor)  # as the reconstruction will (calib/prepare.py)
    found = search_board(raw)
    a, b = found.pair()
    work = _central(raw, crop_px)
    stated = Calibration.identity(raw)
    m_stated = frame_misfits(work, z, iterations=iterations, device=device)
    total_stated = float(np.sqrt(np.mean(m_stated**2)))
    totals = {}
    fits = {}
    for orient in (a, b):
        cal_o = found.fit_of(orient).calibration(raw)
        m_o = frame_misfits(cal_o.apply(work), z, iterations=iterations, device=device)
        totals[orient], fits[orient] = float(np.sqrt(np.mean(m_o**2))), (cal_o, m_o)
    if 0 in totals and total_stated <= totals[0]:
        totals[0], fits[0] = total_stated, (stated, m_stated)
    best_orient, other, apart = choose_twin(totals)
    cal, m_found = fits[best_orient]
    total_found = totals[best_orient]
    note = _twin_note(found)
    if not apart and best_orient != 0:
        note += (f" (or {board_orientation.describe(other)}: a 180° turn the data cannot tell apart without a "
                 "stated sample depth)")
    misfit = m_found
    na = cal.na(raw)
    bad = outlier_frames(misfit, np.hypot(na[:, 0], na[:, 1]) < raw.optics.na_obj)
    in_bf = np.hypot(na[:, 0], na[:, 1]) < raw.optics.na_obj
    group_median = {flag: float(np.median(misfit[in_bf == flag])) if np.any(in_bf == flag) else 1.0
                    for flag in (True, False)}
    bad_frames = []
    rel, _ = measured_brightness(raw)
    for i in bad:
        bf = bool(np.hypot(*na[i]) < raw.optics.na_obj)
        bad_frames.append((int(i), f"misfit {misfit[i] / max(group_median[bf], 1e-12):.1f}x the typical "
                                   f"{'bright' if bf else 'dark'}-field frame's (brightness {rel[i]:.2f})"))
    outliers = [(i, b) for i, b in brightness_outliers(raw, na, BRIGHTNESS_OUTLIER) if i not in set(bad.tolist())]
    report = CheckReport(source=str(raw.source or "data"), n_leds=raw.n_leds, saturated_fraction=raw.saturated_fraction(),
                         background_fraction=background,
                         contradictions=brightness_contradictions(raw, na), orientation=best_orient,
                         orientation_margin=found.margin, orientation_twin_note=note, bad_frames=bad_frames,
                         brightness_outliers=outliers, misfit_stated=total_stated, misfit_searched=total_found)
    report.suggestions = _suggestions(report, raw)
    return report


def _suggestions(rep: CheckReport, raw: RawData) -> list[str]:
    out = []
    if rep.orientation != 0:
        out.append("reconstruct with the defaults: the orientation is corrected and the board calibrated "
                   "(or fix the board description and import again)")
    elif rep.misfit_searched < 0.9 * rep.misfit_stated:
        out.append("the board is not quite where the file says: the default reconstruction calibrates it")
    if rep.bad_frames:
        out.append(f"{len(rep.bad_frames)} frame(s) are left out by default (--keep-bad-frames keeps them)")
    if rep.saturated_fraction > 0.2:
        out.append("more than a fifth of the bright-field pixels are clipped: shorten the bright-field exposure")
    if raw.is_simulated:
        out.append("a simulated file: reconstructed with the stated geometry unless --calibrate")
    if not out:
        out.append("nothing to correct: reconstruct with the defaults")
    return out
