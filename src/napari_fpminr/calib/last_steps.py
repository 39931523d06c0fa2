"""The calibration's last steps, after the candidates' choice (:func:`.pipeline.iter_calibrate`).

Board refit on an intensity-corrected object (:func:`refit_on_corrected_object`, judged by
:func:`refit_choice`) and the NAs polished on the pupil's bins (:func:`bin_polish_candidate`,
:mod:`.bin_polish`). Both are judged against the choice by the misfit with every LED's gain fitted
in closed form (:func:`.misfits.gain_free_misfit`): the choice's brightness was fitted to its own
NAs' errors, so the misfit with either candidate's brightness favours the choice
(docs/benchmarks.md, capture range).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ..rawdata import RawData
from ..recon.stop import should_stop
from .bin_polish import polish_on_bins
from .fit import fit_geometry, object_tilt, refine_positions
from .misfits import brightness_from_field, corrected_data, gain_free_misfit, led_weights, misfit_measured
from .model import Calibration

__all__ = ["REFIT_TIE", "bin_polish_candidate", "refit_choice", "refit_on_corrected_object"]


#: the refit counts as tied with the choice on the brightness-free misfit within this fraction; a
#: tie is broken by the misfit with each candidate's own brightness (measured: the UConn blue smear,
#: refit + pupil-edge LEDs 0.0838 against 0.0835 brightness-free, 0.119 against 0.165 with brightness)
REFIT_TIE = 0.01


def refit_choice(refits: dict, free: dict, misfits: dict, free_chosen: float, misfit_chosen: float) -> str | None:
    """The refit candidate that replaces the choice, or None: the one of least brightness-free misfit
    when that is lower than the choice's; else, among those tied with the choice on it (within
    ``REFIT_TIE``), the one of least misfit with its own brightness when that is lower than the choice's."""
    label = min(refits, key=free.get)
    if free[label] < free_chosen:
        return label
    tied = [k for k in refits if free[k] <= (1.0 + REFIT_TIE) * free_chosen]
    if tied:
        label = min(tied, key=misfits.get)
        if misfits[label] < misfit_chosen:
            return label
    return None


def bin_polish_candidate(cal: Calibration, best: str, field_of, norm: RawData, level: float, z: float,
                          brightness: bool, stop):
    """``(label, calibration, misfit, info)`` for ``cal`` with every LED's NA polished on the
    pupil's bins (:mod:`.bin_polish`); ``()`` when no LED moves or no variant is better, ``None``
    when stopped.

    Variants: the choice's brightness kept, and (when the brightness is fitted) the brightness fitted
    again to the polished object, since a brightness fitted under the old NAs carries their errors.
    A variant must beat the choice on the brightness-free misfit (the plain misfit when the
    brightness is not fitted) and must not fit the data worse with its own brightness; the one of
    least misfit is returned. ``info``: LEDs moved, the judge's scores, every variant's misfit."""
    chosen_data, chosen_field = field_of(cal)
    if chosen_field is None:
        return None
    got = polish_on_bins(*chosen_field, z, chosen_data, chosen_data.optics.na_illum, stop=lambda: should_stop(stop))
    if got is None:
        return None
    na_polished, moved = got
    if not moved.any():
        return ()
    misfit_now = misfit_measured(*chosen_field, z, norm, chosen_data, cal.brightness, cal.background / level)
    free_now = gain_free_misfit(*chosen_field, z, norm, chosen_data) if brightness else misfit_now
    polished = cal.replace(na_illum=na_polished)
    variants = {"": polished}
    if brightness:
        data, field = field_of(polished)
        if field is None:
            return None
        b, bg = brightness_from_field(norm, data, *field, z)
        variants[" + brightness"] = polished.replace(brightness=b, background=bg * level)
    info = {"moved": int(moved.sum()), "score_before": free_now, "misfit_before": misfit_now,
            "judge": "misfit with per-LED gains fitted" if brightness else "misfit", "variants": {}}
    ok = {}
    for suffix, c in variants.items():
        data, field = field_of(c)
        if field is None:
            return None
        misfit = misfit_measured(*field, z, norm, data, c.brightness, c.background / level)
        score = gain_free_misfit(*field, z, norm, data) if brightness else misfit
        info["variants"][suffix or "brightness kept"] = {"misfit": misfit, "score": score}
        if score < free_now and misfit <= misfit_now:
            ok[suffix] = misfit
    if not ok:
        return ()
    suffix = min(ok, key=ok.get)
    info["score"] = info["variants"][suffix or "brightness kept"]["score"]
    return best + " + NAs polished on the pupil's bins" + suffix, variants[suffix], ok[suffix], info


def refit_on_corrected_object(norm: RawData, cal: Calibration, level: float, z: float, iterations: int, device,
                               stop, use_tilt: bool) -> Calibration | None:
    """The global model fitted once more, to per-LED NAs refined against an object reconstructed
    with the solver's per-LED intensity correction (:mod:`napari_fpminr.recon.qnewton`).

    Every round's object is reconstructed from data divided by the brightness estimate of the
    moment, and a few % of brightness error are written into it on every pass; the NAs refined
    against it inherit that. Fitting the gains in the solver leaves a cleaner object: on the
    capture-range corner (−2 mm, −6°, ×0.94) of docs/benchmarks.md the board fit through NAs
    refined against it is 0.0003 NA rms off the truth, against 0.0053 for the rounds' choice.
    The per-LED NAs themselves stay noisy (0.0056 rms), so only the board model through them is
    kept (no per-LED overrides), with the brightness times the fitted intensity gains. ``None``
    when stopped."""
    from ..recon.conventional import iter_conventional

    data = corrected_data(norm, cal, level)
    last = None
    for last in iter_conventional(data, [float(z)], iterations=iterations, pupil_update=True, device=device,
                                  stop=stop, adaptive_step=False, intensity_correction=True):
        pass
    if last is None or last.stopped or last.stack is None:
        return None
    st = last.stack
    obj = torch.as_tensor(st.amplitude[0] * np.exp(1j * st.phase[0]), dtype=torch.complex64, device=device)
    pupil = torch.as_tensor(st.pupil[0], dtype=torch.complex64, device=device)
    gain2 = st.led_gain[0].astype(np.float64) ** 2
    fitted = replace(data, intensities=(data.intensities * gain2[:, None, None]).astype(np.float32))
    na_fit, _ = refine_positions(obj, pupil, z, fitted, data.optics.na_illum, stop=lambda: should_stop(stop))
    tilt = object_tilt(obj, data.optics.dx_hr_um) * data.optics.wavelength_um if use_tilt else np.zeros(2)
    refit = fit_geometry(norm, na_fit + tilt[None, :], led_weights(data), cal.replace(na_illum=None))
    b = cal.brightness / gain2
    bf = norm.optics.bright_field
    b /= b[bf].mean() if bf.any() else b.mean()
    return refit.replace(brightness=b)
