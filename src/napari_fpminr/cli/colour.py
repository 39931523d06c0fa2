"""``fpminr reconstruct RED GREEN BLUE --colour`` and ``fpminr render COLOUR_MODEL``: translation only.

The job itself is :func:`napari_fpminr.colour.job.iter_colour`; this module reads the three files,
applies the real-data defaults per channel (``reconstruct._prepare``), prints what was measured
and writes the result.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import FPMInputError
from ..progress import ProgressLine, format_seconds
from .common import (MODEL_SUFFIX, STACK_SUFFIXES, _check_output_size, _crop, _default_z_range, _output_guard,
                     _read_raw, _requested_planes, input_files)


def cmd_reconstruct_colour(args) -> int:
    paths = [Path(p) for p in args.raw]
    out = Path(args.output)
    if len(paths) != 3:
        raise FPMInputError(f"--colour takes three raw files (red, green, blue), got {len(paths)}", out)
    suffix = out.suffix.lower()
    if args.method == "fpm" and suffix not in STACK_SUFFIXES:
        raise FPMInputError(f"--method fpm writes a colour stack: use -o with {', '.join(STACK_SUFFIXES)}", out)
    if args.method == "inr" and suffix not in STACK_SUFFIXES + (MODEL_SUFFIX,):
        raise FPMInputError(f"--method inr writes a colour model (.fpminr) or a stack ({', '.join(STACK_SUFFIXES)})",
                            out)
    if getattr(args, "calibration", None):
        raise FPMInputError("--calibration names one file; with --colour each channel is calibrated from its own data "
                            "(--calibrate, the default for measurements) or not at all (--no-calibrate)", out)
    inputs = [f for p in paths for f in input_files(p)]
    with _output_guard(out, inputs):
        if getattr(args, "tile", None):
            return run_colour_tiled(args, paths, out)
        return _reconstruct_colour(args, paths, out)


def read_colour_raws(args, paths):
    """The three raw data sets (with ``--crop``), ordered red, green, blue by wavelength."""
    from ..colour.job import order_channels

    raws = []
    for p in paths:
        raw = _read_raw(args, p)
        if args.crop:
            raw = _crop(raw, args.crop, p)
        raws.append(raw)
    ordered, order = order_channels(raws)
    if order != [0, 1, 2]:
        print("colour: channels ordered by wavelength: " + ", ".join(
            f"{paths[i].name} ({1000 * raws[i].optics.wavelength_um:.0f} nm)" for i in order), file=sys.stderr)
    return ordered


def _reconstruct_colour(args, paths, out: Path) -> int:
    from ..colour.focus import ScanOptions
    from ..colour.job import ColourJob, iter_colour
    from ..colour.model import CHANNELS
    from .reconstruct import _inr_config, _prepare

    raws = read_colour_raws(args, paths)
    planes = _requested_planes(args, _default_z_range(raws[1]))
    if args.method == "inr" and not planes.max() > planes.min():
        raise FPMInputError("a colour model needs a z range: give --z-max above --z-min", out)
    if out.suffix.lower() != MODEL_SUFFIX:
        _check_output_size(out, len(planes), raws[1].hr_shape, 3 * 3)
    config = _inr_config(args, raws[1], out) if args.method == "inr" else None
    asked_pupil = args.recover_pupil
    prepared, pupils = [], []
    for name, raw in zip(CHANNELS, raws, strict=True):
        print(f"--- {name} channel: {raw.source} ({1000 * raw.optics.wavelength_um:.0f} nm)", file=sys.stderr)
        args.recover_pupil = asked_pupil
        prepared.append(_prepare(args, raw))
        pupils.append(bool(args.recover_pupil))
    scan = ScanOptions(half_range_um=args.focus_search_um, step_um=args.focus_step_um, crop_px=args.focus_crop)
    job = ColourJob(method=args.method, z_min_um=float(planes.min()), z_max_um=float(planes.max()), planes_um=planes,
                    train_config=config, iterations=args.iterations, recover_pupil=tuple(pupils), scan=scan,
                    device=args.device)
    bar = ProgressLine("colour", enabled=not args.quiet)
    ev = None
    for ev in iter_colour(prepared, job):
        loss = f" loss {ev.loss:.3e}" if np.isfinite(ev.loss) else ""
        bar.update(ev.fraction, f"{ev.message}{loss}"[:90])
    bar.close("done")
    if ev is None or ev.result is None:
        raise FPMInputError("colour reconstruction stopped before it finished", out)
    result = ev.result
    print(focus_report(result.registration, [r.z_um for r in raws], result.meta), file=sys.stderr)
    if args.method == "inr" and out.suffix.lower() == MODEL_SUFFIX:
        from ..colour.file import save_colour_model
        from ..io.safety import writing

        with writing(out):
            save_colour_model(result, out)
        print(f"colour model {out}")
        return 0
    from ..colour.outputs import write_colour_stack

    if args.method == "inr":
        slices = result.render(planes, parts=("transmittance", "amplitude", "phase"))
        dx = result.dx_hr_um
    else:
        slices, dx = result.slices, result.dx_um
    write_colour_stack(out, slices, planes, dx, [r.wavelength_um for r in result.registration])
    print(f"colour stack {out}  ({len(planes)} planes)")
    return 0


def run_colour_tiled(args, paths, out: Path) -> int:
    """``--colour --tile N``: one tiled INR job per channel (the tiles job API) and a colour mosaic header."""
    from ..colour.focus import ScanOptions
    from ..colour.mosaic import channel_paths, iter_colour_mosaic

    if args.method != "inr" or out.suffix.lower() != MODEL_SUFFIX:
        raise FPMInputError("a colour mosaic is three tiled models: use --method inr and -o with .fpminr", out)
    raws = read_colour_raws(args, paths)
    planes = _requested_planes(args, _default_z_range(raws[1]))
    if not planes.max() > planes.min():
        raise FPMInputError("a colour mosaic needs a z range: give --z-max above --z-min", out)
    train = {"seed": args.seed}
    if getattr(args, "rank", None):
        train["rank"] = args.rank
    scan = ScanOptions(half_range_um=args.focus_search_um, step_um=args.focus_step_um, crop_px=args.focus_crop)
    bar = ProgressLine("colour tiles", enabled=not args.quiet)
    ev = None
    for ev in iter_colour_mosaic(raws, out, args.tile, args.overlap, (float(planes.min()), float(planes.max())),
                                 train=train, scan=scan, device=args.device):
        bar.update(ev.fraction, ev.message[:90])
    bar.close("done")
    if ev is None or ev.result is None:
        raise FPMInputError("the colour mosaic stopped before it finished", out)
    print(focus_report(ev.result.registration, [r.z_um for r in raws], {}), file=sys.stderr)
    if not getattr(args, "keep_tiles", False):
        import shutil

        from ..tiles.run import work_dir_for

        for p in channel_paths(out):
            shutil.rmtree(work_dir_for(p), ignore_errors=True)
    print(f"colour mosaic {out} (channels {', '.join(p.name for p in channel_paths(out))})")
    return 0


def focus_report(registration, stated_um, meta: dict) -> str:
    """Measured focus, offsets and shifts per channel, next to the depths the files state."""
    from ..colour.model import CHANNELS

    lines = ["colour registration (common z = the green channel's):"]
    residual = meta.get("residual_shift_raw_px") or [[np.nan, np.nan]] * 3
    quadrant = meta.get("residual_quadrant_raw_px") or [np.nan] * 3
    for name, r, stated, res, quad in zip(CHANNELS, registration, stated_um, residual, quadrant, strict=True):
        st = f"stated {stated:+.1f} um" if stated is not None else "no stated depth"
        line = (f"  {name:5s} {1000 * r.wavelength_um:.0f} nm: best focus {r.focus_um:+.2f} um ({st}), "
                f"offset {r.z_offset_um:+.2f} um, shift ({r.shift_px[0]:+.2f}, {r.shift_px[1]:+.2f}) hr px, "
                f"white {r.white:.3f}")
        if "residual_shift_raw_px" in meta:
            line += f", residual ({res[0]:+.3f}, {res[1]:+.3f}) raw px, worst quadrant {quad:.3f} raw px"
        lines.append(line)
    if "elapsed_s" in meta:
        lines.append(f"  in {format_seconds(float(meta['elapsed_s']))}")
    return "\n".join(lines)


def render_colour(args, path: Path, out: Path) -> int:
    """``fpminr render COLOUR_MODEL -o OUT``: colour planes (npz/tif/zarr), or all-in-focus in colour."""
    from ..colour.file import load_colour_model
    from ..colour.outputs import write_colour_stack
    from ..device import resolve_device

    model = load_colour_model(path, device=resolve_device(args.device))
    if args.region or args.level:
        raise FPMInputError("--region and --level are for mosaics; this is a colour model", path)
    planes = _requested_planes(args, model.z_range_um)
    lo, hi = model.z_range_um
    outside = planes[(planes < lo - 1e-6) | (planes > hi + 1e-6)]
    if outside.size:
        raise FPMInputError(f"z = {outside[0]:g} um is outside the colour model's range [{lo:g}, {hi:g}] um", path)
    _check_output_size(out, len(planes), model.hr_shape, 3 * 3)
    waves = [r.wavelength_um for r in model.registration]
    if args.all_in_focus:
        from ..colour.focus_stack import colour_all_in_focus

        slices, depth = colour_all_in_focus(model, planes, patch=args.patch, stride=args.stride)
        z_repr = float(np.nanmedian(depth)) if np.isfinite(depth).any() else float(np.median(planes))
        write_colour_stack(out, slices, [z_repr], model.dx_hr_um, waves, depth_um=depth)
        print(f"all-in-focus {out}")
        return 0
    bar = ProgressLine("render", enabled=not args.quiet)
    parts = []
    for start in range(0, len(planes), 4):
        parts.append(model.render(planes[start:start + 4], parts=("transmittance", "amplitude", "phase")))
        bar.update(min(1.0, (start + 4) / len(planes)), f"{min(len(planes), start + 4)}/{len(planes)} planes")
    bar.close()
    from ..colour.model import ColourSlices

    slices = ColourSlices(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("transmittance", "amplitude",
                                                                                     "phase")))
    write_colour_stack(out, slices, planes, model.dx_hr_um, waves)
    print(f"colour stack {out}  ({len(planes)} planes)")
    return 0


def add_colour_options(p) -> None:
    p.add_argument("--colour", "--color", action="store_true", dest="colour",
                   help="three raw files of one field (red, green, blue): one registered colour model or stack")
    p.add_argument("--focus-search-um", type=float, default=8.0,
                   help="colour: half range of each channel's focus scan around its stated depth (or the z range's middle)")
    p.add_argument("--focus-step-um", type=float, default=1.0, help="colour: focus scan spacing (then 1/4 of it)")
    p.add_argument("--focus-crop", type=int, default=64, help="colour: raw px of the central crop the scan uses")
