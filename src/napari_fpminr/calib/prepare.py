"""Real-data defaults: what happens to a measurement before it is reconstructed, decided once.

A *measurement* is any data set not made by ``fpminr simulate`` (``RawData.is_simulated``). The
stated geometry of a real rig is never quite right and its frames are never all good, so by
default a measurement is

0. freed of the camera's background: the smallest mean of the far dark-field frames (offset and
   stray light; :func:`~.check.background_floor`), subtracted when above 0.2 % of the bright-field
   level;
1. calibrated (:func:`~.pipeline.iter_calibrate`: the board's orientation among the 8 turns and
   mirrors, its placement, the LEDs' brightness and a background), kept only when it lowers the
   misfit ("never worse"); ``calibrate=False`` opts out, a calibration file replaces the fit;
2. checked frame by frame: frames the calibrated model cannot fit (a dead or flickering LED, an
   LED off its stated place) are left out (:func:`~.check.frame_misfits`, ``drop_bad_frames``);
3. reconstructed with pupil recovery (``recover_pupil``: a real objective is never the ideal disk);
4. saturated pixels (``RawData.valid``) stay out of the data term in every solver, and a dark
   level stated by the file is already subtracted by its reader.

The solvers' per-LED intensity correction (``correct_intensity``, :mod:`recon.qnewton`) is not
a default: it recovers a simulated board's brightness error (capture-range corner 39.98 -> 42.62
dB), but on the real UConn smears it moved each colour channel's reconstruction enough to break
their registration (red 0.16 -> 0.76 raw px worst quadrant, docs/benchmarks.md).

Simulated files keep the stated geometry and the ideal pupil unless asked. Every choice is one
line of :attr:`Preparation.decisions`, which the CLI prints and the widget shows. The CLI, the
widget and the tiles all call :func:`iter_prepare`: the policy lives here only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from ..rawdata import CORRECT_INTENSITY_KEY, RawData
from .check import _central, background_floor, frame_misfits, outlier_frames, subtract_background
from .model import Calibration
from .pipeline import CalibrationProgress, iter_calibrate

__all__ = ["Preparation", "PrepareOptions", "iter_prepare", "prepare", "replay", "subtract_background"]


@dataclass(frozen=True)
class PrepareOptions:
    """What the user asked; ``None`` means "the default for this kind of data" (module docstring)."""

    calibrate: bool | None = None
    calibration: Calibration | None = None
    recover_pupil: bool | None = None
    correct_intensity: bool | None = None  # None/False: off (module docstring); True: the solvers fit per-LED gains
    drop_bad_frames: bool | None = None
    subtract_background: bool | None = None
    orientation: str = "auto"
    calib_kwargs: dict = field(default_factory=dict)


@dataclass
class Preparation:
    """The data to reconstruct and how.

    Attributes:
        raw: corrected data (calibration applied, bad frames left out).
        recover_pupil: whether the solvers recover the pupil.
        decisions: one plain line per choice made.
        calibration: the calibration applied (``None``: none).
        dropped: indices (in the input's LED order) of the frames left out.
        background: level subtracted from every frame first (file units).
    """

    raw: RawData
    recover_pupil: bool
    decisions: list[str]
    calibration: Calibration | None = None
    dropped: list[int] = field(default_factory=list)
    background: float = 0.0

    def record(self) -> dict:
        """JSON-safe record for model files: enough to rebuild the training data from the raw file
        (:func:`replay`)."""
        return {"background": self.background, "dropped": self.dropped, "decisions": self.decisions,
                "calibration": None if self.calibration is None else self.calibration.to_dict()}


def iter_prepare(raw: RawData, options: PrepareOptions | None = None, *, device="auto",
                 stop=None) -> Iterator[CalibrationProgress]:
    """Apply the real-data defaults; yields progress, the last event's ``preparation`` holds the result."""
    opt = options or PrepareOptions()
    measured = not raw.is_simulated
    t0 = time.perf_counter()
    decisions = [f"data: {'a measurement' if measured else 'a simulation'} ({raw.n_leds} frames, "
                 f"{raw.lr_shape[0]}x{raw.lr_shape[1]} px)"]
    background = 0.0
    if measured if opt.subtract_background is None else bool(opt.subtract_background):
        floor = background_floor(raw)
        level = raw.background_level()
        if floor is not None and floor > 0.002 * level:
            background = floor
            raw = subtract_background(raw, floor)
            decisions.append(f"background: {floor:.4g} ({100 * floor / level:.2f} % of the bright-field level, the "
                             "darkest far dark-field frame's mean) subtracted")
        else:
            decisions.append("background: none to subtract" if floor is not None else
                             "background: not measured (too few frames far in the dark field)")
    cal = opt.calibration
    do_cal = cal is None and (measured if opt.calibrate is None else bool(opt.calibrate))
    if cal is not None:
        decisions.append(f"calibration: applied from {cal.report.get('file', 'the file given')}")
    elif do_cal:
        last = None
        for last in iter_calibrate(raw, orientation=opt.orientation, device=device, stop=stop, **opt.calib_kwargs):
            if last.calibration is None and not last.stopped:
                yield last
        if last is None or last.stopped:
            yield _done(t0, None, stopped=True)
            return
        cal = last.calibration
        verdict = cal.report.get("orientation_verdict")
        if verdict:
            decisions.append(verdict)
        decisions.append("calibration: " + (cal.report.get("message", "") if cal.fallback else
                                            f"fitted ({_summary(cal)})"))
    else:
        decisions.append("calibration: none (" + ("--no-calibrate" if measured else "simulated data keep the "
                                                   "stated geometry; --calibrate fits one") + ")")
    data = cal.apply(raw) if cal is not None else raw
    dropped: list[int] = []
    drop = measured if opt.drop_bad_frames is None else bool(opt.drop_bad_frames)
    if drop:
        z = float(raw.z_um) if raw.z_um is not None else float(cal.report.get("z_um", 0.0)) if cal else 0.0
        misfit = frame_misfits(_central(data, 64), z, device=device)
        bad = outlier_frames(misfit, data.optics.bright_field)
        if bad.size and data.n_leds - bad.size >= 3:
            keep = np.setdiff1d(np.arange(data.n_leds), bad)
            data = data.select_leds(keep)
            dropped = bad.tolist()
            typical = float(np.median(misfit))
            decisions.append(f"frames: left out {bad.size} the model cannot fit (LED "
                             + ", ".join(f"{i} misfit {misfit[i] / typical:.1f}x" for i in bad)
                             + "; --keep-bad-frames keeps them)")
        else:
            decisions.append("frames: every frame fits the model")
    pupil = measured if opt.recover_pupil is None else bool(opt.recover_pupil)
    decisions.append("pupil: " + ("recovered (" + ("a real objective is never the ideal disk; --no-recover-pupil "
                                                    "opts out" if measured and opt.recover_pupil is None else "asked")
                                  + ")" if pupil else "ideal disk" + (" (--no-recover-pupil)" if measured else "")))
    correct = bool(opt.correct_intensity)  # off unless asked (module docstring)
    if correct:
        data = replace(data, meta=dict(data.meta, **{CORRECT_INTENSITY_KEY: True}))
    if measured or correct:
        decisions.append("LED brightness: " + ("refined per LED by the solver (asked)" if correct
                                               else "as " + ("calibrated" if cal is not None else "stated")
                                               + " (--correct-intensity refines it per LED in the solver)"))
    if data.valid is not None:
        decisions.append(f"saturation: {100 * data.saturated_fraction():.1f} % of bright-field pixels clipped, "
                         "left out of the data term")
    if "dark_level" in raw.meta:
        decisions.append(f"dark level: {raw.meta['dark_level']:g} subtracted (from the file)")
    yield _done(t0, Preparation(raw=data, recover_pupil=pupil, decisions=decisions, calibration=cal,
                                dropped=dropped, background=background))


def _summary(cal: Calibration) -> str:
    rep = cal.report
    parts = []
    if "misfit_before" in rep and "misfit_after" in rep:
        parts.append(f"misfit {rep['misfit_before']:.4f} -> {rep['misfit_after']:.4f}")
    if cal.kind == "board":
        parts.append(f"shift ({cal.shift_mm[0]:+.2f}, {cal.shift_mm[1]:+.2f}) mm, rotation {cal.rotation_deg:+.2f} deg, "
                     f"height x{cal.height_scale:.3f}")
    parts.append(f"brightness spread {100 * cal.brightness_spread():.0f} %")
    return ", ".join(parts)


def _done(t0: float, prep: Preparation | None, stopped: bool = False) -> CalibrationProgress:
    return CalibrationProgress("prepared" if not stopped else "stopped", 1.0, "ready" if not stopped else "stopped",
                               time.perf_counter() - t0, stopped=stopped, preparation=prep)


def prepare(raw: RawData, options: PrepareOptions | None = None, **kwargs) -> Preparation:
    """Run :func:`iter_prepare` to the end."""
    last = None
    for last in iter_prepare(raw, options, **kwargs):
        pass
    prep = getattr(last, "preparation", None)
    if prep is None:
        from ..errors import FPMInputError

        raise FPMInputError("preparation was stopped", raw.source)
    return prep


def replay(raw: RawData, record: dict) -> RawData:
    """The training data a model saw, rebuilt from its raw file and :meth:`Preparation.record`.

    Every value of the record is checked (it comes from a file): a damaged one is an
    :class:`~napari_fpminr.errors.FPMInputError` naming the raw file.
    """
    from ..errors import FPMInputError

    if not isinstance(record, dict):
        raise FPMInputError("the model's recorded preparation is damaged", raw.source)
    background = record.get("background") or 0.0
    if isinstance(background, bool) or not isinstance(background, (int, float)) or not 0 <= background < float("inf"):
        raise FPMInputError("the model's recorded background level is damaged", raw.source)
    raw = subtract_background(raw, float(background))
    if isinstance(record.get("calibration"), dict):
        try:
            cal = Calibration.from_dict(record["calibration"])
        except ValueError as exc:
            raise FPMInputError(f"the model's recorded calibration is damaged: {exc}", raw.source) from None
        if cal.n_leds != raw.n_leds:
            raise FPMInputError(f"the model was trained on {cal.n_leds} LEDs, these raw data have {raw.n_leds}",
                                raw.source)
        raw = cal.apply(raw)
    dropped = record.get("dropped") or []
    try:
        drop = np.asarray(dropped, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise FPMInputError("the model's recorded list of left-out frames is damaged", raw.source) from None
    if drop.size:
        if drop.min() < 0 or drop.max() >= raw.n_leds:
            raise FPMInputError("the model's recorded list of left-out frames does not fit these data", raw.source)
        raw = raw.select_leds(np.setdiff1d(np.arange(raw.n_leds), drop))
    return raw
