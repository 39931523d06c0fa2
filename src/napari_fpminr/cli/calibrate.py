"""``fpminr calibrate RAW -o RAW.calib.json`` and the ``--calibration``/``--calibrate`` options.

``calibrate`` fits the illumination model (:mod:`napari_fpminr.calib`) and prints what it found:
board shift, rotation, height, brightness spread, background, misfit before/after, and a notice
when it kept the nominal model. ``reconstruct --calibration FILE`` applies a saved calibration,
``--calibrate`` fits one inline; either way the model file records it (``meta["calibration"]``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import FPMInputError
from ..progress import ProgressLine
from .common import _add_optics_overrides, _crop, _output_guard, _read_raw, input_files

__all__ = ["add_calibrate_parser", "add_calibration_options", "apply_calibration_args", "calib_fit_kwargs",
           "calibration_text"]


def _add_fit_options(p) -> None:
    p.add_argument("--calib-z", type=float, dest="calib_z", metavar="Z_UM",
                   help="plane (um) of the calibration's quick reconstructions (default: the file's stated depth, else 0)")
    p.add_argument("--calib-method", choices=("data", "brightfield", "both"), default="data", dest="calib_method",
                   help="data: misfit-driven refinement (default); brightfield: spectrum disks only; both")
    p.add_argument("--calib-rounds", type=int, default=3, dest="calib_rounds", help="data-driven rounds (default 3)")
    p.add_argument("--calib-crop", type=int, default=64, dest="calib_crop", metavar="PX",
                   help="central crop (raw px) the fit uses (default 64; 0 = whole field)")
    p.add_argument("--per-led", action="store_true", dest="calib_per_led",
                   help="keep per-LED refined NAs instead of the global board model")


def add_calibrate_parser(sub) -> None:
    p = sub.add_parser("calibrate", help="fit the LED board geometry, per-LED brightness and background")
    p.add_argument("raw")
    p.add_argument("-o", "--output", help="calibration file to write (default RAW.calib.json)")
    _add_optics_overrides(p)
    _add_fit_options(p)
    p.add_argument("--crop", type=int, nargs=4, metavar=("TOP", "LEFT", "HEIGHT", "WIDTH"),
                   help="calibrate on a raw-pixel region")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_calibrate)


def add_calibration_options(p) -> None:
    """``--calibration FILE`` / ``--calibrate`` (and the fit's options) for ``reconstruct``."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--calibration", metavar="FILE", help="apply an illumination calibration (.calib.json)")
    g.add_argument("--calibrate", action="store_true", default=None,
                   help="self-calibrate the illumination before reconstructing (default for measured data)")
    g.add_argument("--no-calibrate", action="store_false", dest="calibrate",
                   help="reconstruct with the stated illumination geometry (the default for simulated data)")
    p.add_argument("--force-calibration", action="store_true", dest="force_calibration",
                   help="apply --calibration FILE even when it was made for other data (a warning, not a refusal)")
    _add_fit_options(p)


def calib_fit_kwargs(args) -> dict:
    """The calibration fit's options given on the command line, as :func:`iter_calibrate` keywords."""
    return {"z_um": args.calib_z, "method": args.calib_method, "rounds": args.calib_rounds,
            "crop_px": args.calib_crop or None, "per_led": args.calib_per_led}


def _fit(args, raw, quiet: bool):
    from ..calib import iter_calibrate

    bar = ProgressLine("calibrate", enabled=not quiet)
    last = None
    for last in iter_calibrate(raw, z_um=args.calib_z, method=args.calib_method, rounds=args.calib_rounds,
                               crop_px=args.calib_crop or None, per_led=args.calib_per_led,
                               device=getattr(args, "device", "auto")):
        bar.update(last.fraction, last.message[:90])
    bar.close("done")
    assert last is not None and last.calibration is not None
    return last.calibration


def calibration_text(cal, raw=None) -> str:
    """What a calibration found, one quantity per line."""
    rep = cal.report
    lines = []
    if cal.orientation:
        from ..optics.orientation import describe

        lines.append(f"orientation   the stated board {describe(cal.orientation)}")
    if cal.kind == "board":
        lines.append(f"board shift   ({cal.shift_mm[0]:+.3f}, {cal.shift_mm[1]:+.3f}) mm")
        lines.append(f"rotation      {cal.rotation_deg:+.3f} deg")
        height = "" if raw is None or raw.leds is None else f" ({raw.leds.distance_mm * cal.height_scale:.2f} mm)"
        lines.append(f"height        x{cal.height_scale:.4f}{height}")
    else:
        lines.append(f"NA shift      ({cal.shift_na[0]:+.4f}, {cal.shift_na[1]:+.4f})")
        lines.append(f"rotation      {cal.rotation_deg:+.3f} deg")
        lines.append(f"NA scale      x{1.0 / cal.height_scale:.4f}")
    b = cal.brightness
    lines.append(f"brightness    spread {100 * np.std(b):.1f}% (min {b.min():.3f}, max {b.max():.3f})")
    lines.append(f"background    {cal.background:.4g} (raw intensity units)")
    if "misfit_before" in rep and "misfit_after" in rep:
        lines.append(f"misfit        {rep['misfit_before']:.4f} -> {rep['misfit_after']:.4f} at z = "
                     f"{rep.get('z_um', 0.0):g} um")
    if cal.fallback:
        lines.append(f"fallback      {rep.get('message', 'kept the nominal illumination model')}")
    return "\n".join(lines)


def cmd_calibrate(args) -> int:
    from ..io.calibration_file import default_calibration_path, write_calibration

    raw_path = Path(args.raw)
    out = Path(args.output) if args.output else default_calibration_path(raw_path)
    with _output_guard(out, input_files(raw_path)):
        raw = _read_raw(args, raw_path)
        data = _fingerprint(raw)
        if args.crop:
            raw = _crop(raw, args.crop, raw_path)
        cal = _fit(args, raw, args.quiet)
        cal = cal.replace(report=dict(cal.report, source=str(raw_path), data=data))
        write_calibration(cal, out)
    print(calibration_text(cal, raw))
    print(f"calibration  {out}")
    return 0


def _fingerprint(raw) -> dict:
    """The fingerprint of un-cropped raw data that a calibration records (and is checked against)."""
    from ..io.calibration_file import data_fingerprint

    return data_fingerprint(raw.n_leds, raw.lr_shape, lambda leds: raw.intensities[leds])


def apply_calibration_args(args, raw):
    """``raw`` corrected by ``--calibration FILE`` or ``--calibrate`` (unchanged without either)."""
    from ..io.calibration_file import check_data, read_calibration

    path = getattr(args, "calibration", None)
    if path:
        cal = read_calibration(path)
        if cal.n_leds != raw.n_leds:
            raise FPMInputError(f"calibration is for {cal.n_leds} LEDs, the raw data have {raw.n_leds}", path)
        check_data(cal, lambda: _fingerprint(_read_raw(args, Path(args.raw)) if getattr(args, "crop", None) else raw),
                   path, force=getattr(args, "force_calibration", False))
        cal = cal.replace(report=dict(cal.report, file=str(path)))
    elif getattr(args, "calibrate", False):
        cal = _fit(args, raw, getattr(args, "quiet", False))
        print(calibration_text(cal, raw), file=sys.stderr)
    else:
        return raw
    return cal.apply(raw)
