"""``iter_calibrate``: self-calibration of the illumination, as a generator of progress events.

Pipeline (each round on a central crop of the data, all in normalised units):

1. a short conventional reconstruction of one plane with pupil recovery (``quick_field``) from the
   data corrected by the current calibration;
2. per-LED NAs that best explain each image given that object (``refine_positions``, continuous
   in the NAs), corrected for the common shift the object absorbed as a phase ramp
   (``object_tilt``);
3. the global model (board shift, rotation, height; or a similarity transform) fitted to those
   NAs by weighted least squares (``fit_geometry``), optionally the per-LED NAs themselves;
4. per-LED brightness and a common background by least squares of measured against predicted
   intensities (``fit_brightness``).

Board search first (``search=True``, the default): :mod:`.board_search` scores the stated board
in all 8 orientations (turns by 90° and mirrors) over a wide range of placements (shift ±3 % of
the board distance, rotation ±8°, height ±8 %) by the bright-field circles of the raw spectra and
the bright/dark pattern of the frames. That decides the orientation up to its 180° twin (which the
data cannot tell apart for a thin sample: :mod:`napari_fpminr.optics.orientation`); the twin is
then told apart, where it can be, by the misfit of a quick reconstruction at the stated depth, and
the best placement found starts the data-driven rounds when it fits better than the stated one
(the rounds alone only capture errors of about a frequency bin). ``orientation="stated"`` keeps
the stated orientation and searches the placement only.

Optionally the geometry is also seeded from the per-LED bright-field disk fits
(:mod:`.brightfield`, ``method="both"`` or ``"brightfield"``).

Pupil-edge LEDs against a clean object (``edge_object``, on by default): the LEDs on the pupil
edge (:mod:`napari_fpminr.optics.pupil_edge`) are the ones whose images depend most on their
angles (their zero order sits on the pupil's edge), so their angles are the best determined by the
data and the ones the model needs most precisely; with nominal angles they also distort the quick
object every LED is refined against. So one more candidate reconstructs the object *without*
them, refines their NAs against that object, and keeps the board model's NAs for every other LED
(refining all LEDs this way fits the misfit lower still but moves poorly determined dark-field
LEDs off the true geometry: on the simulated board, max NA error 0.0094 against 0.0017); with and
without brightness, judged like the others.

Board refit on the intensity-corrected object (last, once): the chosen model's data are
reconstructed once more with the solver's per-LED intensity correction, every LED's NA refined
against that object, and the global model fitted through them; it replaces the choice when its
misfit with every LED's gain fitted in closed form is lower (``refit_on_corrected_object``,
``gain_free_misfit``: the rounds' objects carry the brightness estimate's error, this one much
less, and a brightness-free misfit compares the two geometries without either's brightness).

NAs polished on the pupil's bins (last): every LED's NA moved by at most half a frequency bin to
the pattern of object-spectrum bins inside its hard-edged pupil that explains its image best
(:mod:`.bin_polish`), judged like the refit (the plain misfit when the brightness is not fitted).

"Never worse": the nominal and the calibrated models are each judged by the relative amplitude
misfit of a reconstruction of the same plane, in the units of the *measured* data (the calibrated
prediction is ``b_i·I_pred + background``). If calibration does not lower it by at least
``min_gain`` (relative), the nominal model is kept, ``fallback=True`` and the report says so.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..device import resolve_device
from ..errors import FPMInputError
from ..optics.pupil_edge import edge_band_na, pupil_edge_leds
from ..rawdata import RawData
from ..recon.stop import should_stop
from ..optics import orientation as board_orientation
from .board_search import BoardSearch, choose_twin, search_board
from .brightfield import fit_brightfield_disks
from .fit import fit_brightness, fit_geometry, object_tilt, quick_field, refine_positions, subbin_amplitudes
from .last_steps import bin_polish_candidate, refit_choice, refit_on_corrected_object
from .misfits import brightness_from_field, corrected_data, gain_free_misfit, led_weights, misfit_measured
from .model import Calibration

__all__ = ["CalibrationProgress", "calibrate", "iter_calibrate", "METHODS"]

METHODS = ("data", "brightfield", "both")


@dataclass
class CalibrationProgress:
    """One step of :func:`iter_calibrate`; the last event carries ``calibration``."""

    stage: str
    fraction: float
    message: str
    elapsed_s: float
    calibration: Calibration | None = None
    stopped: bool = False
    preparation: object | None = None  # set by :func:`napari_fpminr.calib.prepare.iter_prepare` (its last event)


def _central_crop(raw: RawData, crop_px: int | None) -> RawData:
    h, w = raw.lr_shape
    if not crop_px or raw.optics.pupil is not None or (h <= crop_px and w <= crop_px):
        return raw
    ch, cw = min(h, int(crop_px)), min(w, int(crop_px))
    return raw.crop((h - ch) // 2, (w - cw) // 2, ch, cw)


def iter_calibrate(raw: RawData, *, z_um: float | None = None, method: str = "data", rounds: int = 3,
                   iterations: int = 25, crop_px: int | None = 64, per_led: bool = False,
                   brightness: bool = True, geometry: bool = True, min_gain: float = 0.01, use_tilt: bool = True,
                   edge_object: bool = True, search: bool = True, orientation: str = "auto", device="auto",
                   stop=None, brightness_rounds: str = "each", _shared: dict | None = None
                   ) -> Iterator[CalibrationProgress]:
    """Fit a :class:`Calibration` to ``raw``; yields progress, the last event has ``.calibration``.

    Args:
        z_um: plane of the quick reconstructions (default: the file's stated depth, else 0).
        method: ``"data"`` (misfit-driven refinement), ``"brightfield"`` (spectrum disks only),
            ``"both"`` (disks seed the data-driven rounds).
        rounds: data-driven rounds (reconstruct, refine NAs, fit model, fit brightness).
        iterations: passes of each quick conventional reconstruction.
        crop_px: central crop used for the fit (NAs refer to the field centre); None = whole field.
        per_led: keep the refined per-LED NAs instead of the global model's.
        brightness: fit per-LED brightness and background.
        geometry: fit the global geometric model.
        min_gain: relative misfit decrease below which the nominal model is kept.
        edge_object: add the candidate whose pupil-edge LEDs' NAs are refined against an object
            reconstructed without them (see the module docstring).
        search: run the global board search first (module docstring).
        orientation: ``"auto"`` (find it among the 8) or ``"stated"`` (keep the file's).
        stop: callable or ``threading.Event``; when it fires the last event has ``stopped=True``.
        brightness_rounds: ``"each"`` fits the brightness in every round; when the rounds' board
            fit then explains the data much worse than the file's own board (by more than
            :data:`RETRY_FACTOR`: the brightness absorbed the misfit of misplaced LEDs and dragged
            the board away), the calibration is run again
            with ``"last"`` (brightness only in the last round, once the geometry has settled) and
            the lower misfit of the two wins. Measured on a board 2 mm, -6°, 6 % off with ±30 %
            brightness: the board fit's misfit 0.144 against 0.080 for the file's board with
            "each", 0.033 with "last"; the calibrated reconstruction 36.2 -> 39.7 dB (42.6 dB with
            the true geometry and brightness). Where "each" works it is kept: the opposite corner,
            (+2 mm, -6°, 0.94), reaches misfit 0.008 with it and 0.042 with "last".
    """
    if brightness_rounds not in ("each", "last"):
        raise FPMInputError(f"unknown brightness_rounds {brightness_rounds!r}; use each or last", raw.source)
    options = dict(z_um=z_um, method=method, rounds=rounds, iterations=iterations, crop_px=crop_px, per_led=per_led,
                   brightness=brightness, geometry=geometry, min_gain=min_gain, use_tilt=use_tilt,
                   edge_object=edge_object, search=search, orientation=orientation, device=device, stop=stop)
    if orientation not in ("auto", "stated"):
        raise FPMInputError(f"unknown orientation policy {orientation!r}; use auto or stated", raw.source)
    if method not in METHODS:
        raise FPMInputError(f"unknown calibration method {method!r}; use one of {', '.join(METHODS)}", raw.source)
    if int(rounds) != rounds or rounds < 0 or int(iterations) != iterations or iterations < 1:
        raise FPMInputError("calibration needs rounds >= 0 and iterations >= 1", raw.source)
    dev = resolve_device(device)
    t0 = time.perf_counter()
    z = float(raw.z_um if z_um is None and raw.z_um is not None else (z_um or 0.0))
    if not math.isfinite(z):
        raise FPMInputError(f"calibration plane must be finite, got {z_um!r}", raw.source)
    work = _central_crop(raw, crop_px)
    level = work.background_level()
    norm = RawData(intensities=work.intensities / np.float32(level), optics=work.optics, source=work.source,
                   z_um=work.z_um, meta=work.meta, leds=work.leds)
    nominal = Calibration.identity(raw)
    cal = nominal
    n_steps = (6 + int(rounds) + (1 if method != "data" else 0) + (2 if edge_object else 0) + (2 if search else 0)
               + (2 if search and edge_object else 0))
    step = 0

    def event(stage, message, **kw):
        return CalibrationProgress(stage, min(step / n_steps, 1.0), message, time.perf_counter() - t0, **kw)

    def stopped_event():
        return event("stopped", "calibration stopped; nothing applied", calibration=None, stopped=True)

    shared = {} if _shared is None else _shared  # what a second run ("last") reuses: quick fields, search
    fields: dict[bytes, tuple] = shared.setdefault("fields", {})

    def field_of(c: Calibration):
        """The corrected data under ``c`` and their quick reconstruction, computed once per distinct
        data (the start, the geometry-only and the per-LED candidates are each asked for twice)."""
        data = corrected_data(norm, c, level)
        key = _data_key(data)
        if key not in fields:
            got = quick_field(data, z, iterations=int(iterations), pupil_update=True, device=dev, stop=stop)
            if got is None:
                return data, None
            fields[key] = got
        return data, fields[key]

    with torch.no_grad():
        base_data, base = field_of(nominal)
        if base is None:
            yield stopped_event()
            return
        misfit_before = misfit_measured(*base, z, norm, base_data, np.ones(raw.n_leds), 0.0)
        step += 1
        yield event("nominal", f"nominal model: misfit {misfit_before:.4f} at z = {z:g} um")
        report = {"misfit_before": misfit_before, "z_um": z, "crop_px": list(work.lr_shape), "method": method}

        file_data = base_data  # the data under the file's own board (the search may move the start)
        if search:
            if "search" not in shared:  # whole field: finer bins
                shared["search"] = search_board(raw, orientations=None if orientation == "auto" else [0])
            found = shared["search"]
            step += 1
            yield event("search", f"board search: best {board_orientation.describe(found.best.orientation)} "
                                  f"(margin {found.margin:.2f})")
            got = _choose_start(found, norm, nominal, misfit_before, field_of, z, raw.z_um is not None)
            if got is None:
                yield stopped_event()
                return
            cal, verdict, tried = got
            if cal is not nominal:
                base_data, base = field_of(cal)  # the rounds start from the search's placement
                if base is None:
                    yield stopped_event()
                    return
            report.update(orientation_verdict=verdict, search={"margin": found.margin, "misfits": tried,
                          "scores": {board_orientation.describe(f.orientation): f.score for f in found.fits}})
            if cal.orientation != 0:  # every later candidate keeps the orientation found
                nominal = Calibration.identity(raw, orientation=cal.orientation)
            step += 1
            yield event("orientation", verdict)

        if method != "data":
            disks = fit_brightfield_disks(norm)
            if disks.leds.size >= 3:
                w = np.zeros(raw.n_leds)
                w[disks.leds] = 1.0
                target = norm.optics.na_illum.copy()
                target[disks.leds] = disks.na_measured
                cal = fit_geometry(norm, target, w, cal)
            report["brightfield_leds"] = int(disks.leds.size)
            step += 1
            yield event("brightfield", f"bright-field disks of {disks.leds.size} LEDs: {_geometry_text(cal)}")

        field = base
        start = cal
        for r in range(int(rounds)):
            if should_stop(stop):
                yield stopped_event()
                return
            data, field = field_of(cal) if r > 0 or cal is not start else (base_data, base)
            if field is None:
                yield stopped_event()
                return
            obj, pupil = field
            na_now = data.optics.na_illum
            na_fit, per_led_misfit = refine_positions(obj, pupil, z, data, na_now, stop=lambda: should_stop(stop))
            tilt = object_tilt(obj, data.optics.dx_hr_um) * data.optics.wavelength_um if use_tilt else np.zeros(2)
            target = na_fit + tilt[None, :]
            weights = led_weights(data)
            if geometry:
                cal = fit_geometry(norm, target, weights, cal)
            if per_led:
                cal = cal.replace(na_illum=target)
            if brightness and (brightness_rounds == "each" or r == int(rounds) - 1):
                cal, _ = _fit_brightness_round(norm, cal, level, z, pupil, int(iterations), dev, stop)
            step += 1
            yield event("round", f"round {r + 1}/{rounds}: {_geometry_text(cal)}, brightness spread "
                                 f"{cal.brightness_spread():.3f}, background {cal.background / level:.4f} of BF")

        # candidates, each judged by the misfit of its own reconstruction (the choice is measured)
        geo_only = cal.replace(brightness=None, background=0.0)
        candidates = {"geometry+brightness": cal} if brightness else {}
        if geometry:
            candidates["geometry"] = geo_only
        if brightness:
            got = field_of(geo_only) if geometry else (base_data, base)
            if got[1] is None:
                yield stopped_event()
                return
            b, bg = brightness_from_field(norm, got[0], *got[1], z)
            if geometry:
                candidates["geometry+brightness (recovered pupil)"] = geo_only.replace(brightness=b, background=bg * level)
            candidates["brightness (recovered pupil)"] = nominal.replace(brightness=b, background=bg * level)
        if edge_object:
            # from the start placement (the board fit is a candidate of its own); when the search moved
            # the start only a little away from the file's own board, from that one too (the two are
            # equally plausible; on the blue smear the file's placement wins, 0.151 against
            # 0.164). A start further away is not: the common part of a board shift is invisible to
            # the misfit (the object absorbs it as a tilt), so a candidate that keeps the file's wrong
            # NAs can still fit well (measured: 2 mm, 6°, 6 % off: 35.2 dB against 40.0 dB). Such a
            # start is the search's coarse placement (within a frequency bin): the per-LED candidate
            # is then built on the rounds' board fit instead, which refines it (same corner:
            # 35.2 dB from the search's placement, see docs/benchmarks.md for the board fit's)
            sources = [("", base_data, nominal)]
            moved = file_data is not base_data and nominal.orientation == 0
            if moved and _near_file_placement(base_data, file_data):
                sources.append((" (file's placement)", file_data, Calibration.identity(raw)))
            elif file_data is not base_data and geometry:
                sources = [(" (board fit)", field_of(geo_only)[0], geo_only)]
            for suffix, src_data, src_cal in sources:
                na_clean = _positions_without_edge_leds(src_data, z, int(iterations), dev, stop, use_tilt)
                if should_stop(stop):
                    yield stopped_event()
                    return
                if na_clean is None:
                    continue
                per_led_cal = src_cal.replace(na_illum=na_clean)
                name = "pupil-edge LEDs refined (object without them)" + suffix
                candidates[name] = per_led_cal
                if brightness:
                    got = field_of(per_led_cal)
                    if got[1] is None:
                        yield stopped_event()
                        return
                    b, bg = brightness_from_field(norm, got[0], *got[1], z)
                    candidates[name + " + brightness"] = per_led_cal.replace(brightness=b, background=bg * level)
        misfits = {}
        for name, c in candidates.items():
            data, field = field_of(c)
            if field is None:
                yield stopped_event()
                return
            misfits[name] = misfit_measured(*field, z, norm, data, c.brightness, c.background / level)
            step += 1
            yield event("candidate", f"{name}: misfit {misfits[name]:.4f}")
        best = min(misfits, key=misfits.get) if misfits else None
        cal = candidates[best] if best else nominal
        misfit_after = misfits[best] if best else misfit_before
        if (brightness and geometry and brightness_rounds == "each" and int(rounds) > 1
                and misfits.get("geometry", 0.0) > RETRY_FACTOR * misfit_before):
            yield event("retry", f"the board fit ({misfits['geometry']:.4f}) explains the data worse than the "
                                 f"file's board ({misfit_before:.4f}): rounds again with the brightness fitted last")
            again = None
            for again in iter_calibrate(raw, **options, brightness_rounds="last", _shared=shared):
                if again.calibration is None and not again.stopped:
                    yield replace(again, fraction=min(step / n_steps, 1.0), message="(again) " + again.message)
            if again is None or again.stopped:
                yield stopped_event()
                return
            other = again.calibration
            report["brightness_last"] = {"chosen": other.report.get("chosen"),
                                         "misfit_after": other.report.get("misfit_after")}
            if not other.fallback and other.report["misfit_after"] < misfit_after:
                cal, misfit_after = other.replace(report={}), other.report["misfit_after"]
                best = f"{other.report['chosen']} (brightness fitted last)"
                misfits.update({f"{k} (brightness fitted last)": v for k, v in other.report["candidates"].items()})
        if geometry and best is not None and _shared is None:
            refit = refit_on_corrected_object(norm, cal, level, z, int(iterations), dev, stop, use_tilt)
            if should_stop(stop):
                yield stopped_event()
                return
            if refit is not None:
                # judged against the choice by the misfit with each LED's gain fitted in closed form
                # (brightness-free): the choice's brightness was fitted to its own NAs' errors, the
                # refit's gains under the choice's NAs, so the misfit with either brightness favours
                # the choice (docs/benchmarks.md, capture range)
                name = "board refitted on the intensity-corrected object"
                chosen_data, chosen_field = field_of(cal)
                if chosen_field is None:
                    yield stopped_event()
                    return
                free_chosen = gain_free_misfit(*chosen_field, z, norm, chosen_data)
                refits = {name: refit}
                if edge_object:
                    # the same freedom the per-LED candidates have: pupil-edge LEDs refined on top
                    na_clean = _positions_without_edge_leds(field_of(refit)[0], z, int(iterations), dev, stop,
                                                            use_tilt)
                    if should_stop(stop):
                        yield stopped_event()
                        return
                    if na_clean is not None:
                        refits[name + " + pupil-edge LEDs refined"] = refit.replace(na_illum=na_clean)
                free = {"chosen": free_chosen}
                for label, c in refits.items():
                    data, field = field_of(c)
                    if field is None:
                        yield stopped_event()
                        return
                    free[label] = gain_free_misfit(*field, z, norm, data)
                    misfits[label] = misfit_measured(*field, z, norm, data, c.brightness, c.background / level)
                    yield event("candidate", f"{label}: misfit {misfits[label]:.4f}; with per-LED gains fitted "
                                             f"{free[label]:.4f} against {free_chosen:.4f} for {best}")
                report["gain_free_misfit"] = free
                label = refit_choice(refits, free, misfits, free_chosen, misfit_after)
                if label is not None and misfits[label] < (1.0 - min_gain) * misfit_before:
                    cal, misfit_after, best = refits[label], misfits[label], label
            # every LED's NA polished against the hard-edged pupil's bins (brightness-free judge when
            # the brightness is fitted, as for the refit; the plain misfit when it is known)
            got = bin_polish_candidate(cal, best, field_of, norm, level, z, brightness, stop)
            if got is None:
                yield stopped_event()
                return
            if got:
                label, polished, misfits[label], report["bin_polish"] = got
                info = report["bin_polish"]
                yield event("candidate", f"{label} ({info['moved']} LEDs moved): misfit {misfits[label]:.4f}; "
                                         f"judged {info['score']:.4f} against {info['score_before']:.4f}")
                if misfits[label] < (1.0 - min_gain) * misfit_before:
                    cal, misfit_after, best = polished, misfits[label], label
        report.update(misfit_after=misfit_after, candidates=misfits, chosen=best,
                      elapsed_s=time.perf_counter() - t0)
        if not misfit_after < (1.0 - min_gain) * misfit_before:
            report["message"] = (f"calibration did not lower the misfit ({misfit_before:.4f} -> {misfit_after:.4f}, "
                                 f"needs {100 * min_gain:g}% less): kept the nominal illumination model")
            final = Calibration.identity(raw).replace(fallback=True, report=dict(report, rejected=cal.summary()))
        else:
            report["message"] = f"misfit {misfit_before:.4f} -> {misfit_after:.4f} ({best})"
            final = cal.replace(report=report)
        step = n_steps
        yield event("done", report["message"], calibration=final)


def _fit_brightness_round(norm: RawData, cal: Calibration, level: float, z: float, pupil, iterations: int,
                          device, stop):
    """Brightness and background from a reconstruction with the pupil held fixed.

    A pupil recovered alongside the object absorbs per-LED brightness: its magnitude at a
    bright-field LED's DC point scales that LED's image (measured on a simulation: 4 % of a ±20 %
    spread recovered with pupil recovery, also 4 % with that pupil held fixed, 100 % with its phase
    only). So the object here is reconstructed with the phase of the geometry round's pupil held
    fixed, then ``I_meas ≈ b·I_pred + c`` with the exact (hard-edged) disk.
    """
    geo = cal.replace(brightness=None, background=0.0)
    data = corrected_data(norm, geo.replace(brightness=cal.brightness, background=cal.background), level)
    if pupil is not None:  # phase only: a pupil magnitude at an LED's DC point would act as its brightness
        p = pupil.cpu().numpy()
        data = data.with_optics(pupil=np.where(np.abs(p) > 0, np.exp(1j * np.angle(p)), 0).astype(np.complex64))
    got = quick_field(data, z, iterations=iterations, pupil_update=False, device=device, stop=stop)
    if got is None:
        return cal, False
    obj, fixed = got
    pred = subbin_amplitudes(obj, fixed, z, data.optics.na_illum, data).square().cpu().numpy()
    pred *= data.background_level()  # the solver's normalisation of the data it was given
    b, bg = fit_brightness(pred, norm.intensities, norm.optics.bright_field)
    return cal.replace(brightness=b, background=bg * level), True


def _positions_without_edge_leds(data: RawData, z: float, iterations: int, device, stop,
                                 use_tilt: bool = True) -> np.ndarray | None:
    """``data``'s NAs with the pupil-edge LEDs' refined against an object reconstructed without
    them (``None`` when there are none, or too few others)."""
    o = data.optics
    edge = pupil_edge_leds(o.na_illum[None], o.na_obj, edge_band_na(o.wavelength_um, min(data.lr_shape), o.dx_lr_um))
    keep = np.flatnonzero(~edge)
    if not edge.any() or keep.size < 3:
        return None
    got = quick_field(data.select_leds(keep), z, iterations=iterations, pupil_update=True, device=device, stop=stop)
    if got is None:
        return None
    na, _ = refine_positions(*got, z, data, o.na_illum, stop=lambda: should_stop(stop))
    if use_tilt:  # the common shift the object absorbed as a phase ramp (as in the rounds)
        na = na + object_tilt(got[0], o.dx_hr_um)[None, :] * o.wavelength_um
    out = np.asarray(o.na_illum, np.float64).copy()
    out[edge] = na[edge]
    return out


#: the brightness-every-round calibration is run again with the brightness fitted last when its board
#: fit's misfit exceeds the file's board's by this factor. Measured: 1.80 where the rounds were dragged
#: away (board 2 mm, -6°, 6 % off, ±30 % brightness); 1.26 (green) and 1.17 (red) on the UConn smears,
#: whose similarity model is limited by the real rig and where a second run changes nothing
RETRY_FACTOR = 1.5

#: the file's own board stays a candidate when the search's start moved no LED by more than this
#: fraction of the objective NA (measured: blue smear 0.066, kept; a board 2 mm, 6°, 6 % off: 0.12)
NEAR_FILE_PLACEMENT = 0.1


def _near_file_placement(a: RawData, b: RawData) -> bool:
    """Whether every LED's NA differs by less than ``NEAR_FILE_PLACEMENT`` × the objective NA."""
    return bool(np.abs(a.optics.na_illum - b.optics.na_illum).max() < NEAR_FILE_PLACEMENT * a.optics.na_obj)


def _data_key(data: RawData) -> bytes:
    """A digest of what a quick reconstruction of ``data`` depends on (illumination NAs and frames)."""
    h = hashlib.blake2b(np.ascontiguousarray(data.optics.na_illum, dtype=np.float64).tobytes(), digest_size=16)
    h.update(np.ascontiguousarray(data.intensities).tobytes())
    return h.digest()


def _geometry_text(cal: Calibration) -> str:
    if cal.kind == "board":
        return (f"shift ({cal.shift_mm[0]:+.3f}, {cal.shift_mm[1]:+.3f}) mm, rotation {cal.rotation_deg:+.2f} deg, "
                f"height x{cal.height_scale:.4f}")
    return (f"NA shift ({cal.shift_na[0]:+.4f}, {cal.shift_na[1]:+.4f}), rotation {cal.rotation_deg:+.2f} deg, "
            f"NA scale x{1.0 / cal.height_scale:.4f}")


def calibrate(raw: RawData, **kwargs) -> Calibration:
    """Run :func:`iter_calibrate` to the end and return the calibration."""
    last = None
    for last in iter_calibrate(raw, **kwargs):
        pass
    if last is None or last.calibration is None:
        raise FPMInputError("calibration was stopped", raw.source)
    return last.calibration


def _choose_start(found: BoardSearch, norm: RawData, nominal: Calibration, misfit_nominal: float, field_of,
                  z: float, z_stated: bool):
    """``(start calibration, one-line verdict, misfits tried)`` from a board search, or ``None`` if stopped.

    The pair ``{T, -T}`` comes from the search. Each member's best placement is reconstructed at
    the calibration plane and judged by its misfit (the stated board also at the file's own
    placement); :func:`~.board_search.choose_twin` decides, keeping the statement unless its twin
    fits clearly better (with a stated sample depth ``z ≠ 0`` the twin's object belongs at ``-z``).
    """
    tried: dict[str, float] = {}
    cands, m = {}, {}
    for orient in found.pair():
        cal = found.fit_of(orient).calibration(norm)
        data, fld = field_of(cal)
        if fld is None:
            return None
        cands[orient] = cal
        m[orient] = misfit_measured(*fld, z, norm, data, np.ones(norm.n_leds), 0.0)
        tried[board_orientation.describe(orient)] = m[orient]
    if 0 in m:
        tried["as stated (file's placement)"] = misfit_nominal
        if misfit_nominal <= m[0]:
            cands[0], m[0] = nominal, misfit_nominal  # the file's placement already fits better
    best, other, apart = choose_twin(m)
    if best == 0:
        verdict = "board orientation: as stated"
        if not apart:
            verdict += (" (its 180°-turned twin explains the data as well, as it does for any thin sample "
                        "without a known depth)")
    else:
        verdict = (f"board orientation: the stated board is {board_orientation.describe(best)} relative to the camera: "
                   "corrected")
        if not apart:
            verdict += (f" (or {board_orientation.describe(other)}: the two differ by a 180° turn, which the data "
                        f"cannot tell apart {'at this depth' if z_stated else 'without a stated sample depth'}; "
                        "z and the phase sign may be mirrored)")
    return cands[best], verdict, tried
