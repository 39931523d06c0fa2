"""``fpminr render``: planes or an all-in-focus image from a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import FPMInputError
from ..progress import ProgressLine
from .common import (STACK_SUFFIXES, _add_limits, _add_optics_overrides, _add_z_options, _check_output_size,
                     _output_guard, _requested_planes, _training_raw, input_files)



def cmd_render(args) -> int:
    path = Path(args.model)
    out = Path(args.output)
    if out.suffix.lower() not in STACK_SUFFIXES:
        raise FPMInputError(f"render writes a stack: use -o with {', '.join(STACK_SUFFIXES)}", out)
    if args.all_in_focus and (args.patch < 2 or args.stride < 1):
        raise FPMInputError(f"--patch must be >= 2 and --stride >= 1 px, got {args.patch} and {args.stride}")
    inputs = [path] + (input_files(args.raw) if args.raw else [])
    with _output_guard(out, inputs):
        return _render(args, path, out)


def _render(args, path: Path, out: Path) -> int:
    from ..device import resolve_device
    from ..io import budget
    from ..io.model_file import load_model
    from ..io.stack_files import StackArrays, write_stack

    from ..io.mosaic_file import is_mosaic

    if is_mosaic(path):
        from .tiles import render_mosaic

        return render_mosaic(args, path, out)
    from ..colour.file import is_colour_model
    from ..colour.mosaic import is_colour_mosaic

    if is_colour_mosaic(path):
        raise FPMInputError("a colour mosaic: render does not read colour mosaics yet (open it in napari, or "
                            "render its channel mosaics OUT.red/green/blue.fpminr)", path)
    if is_colour_model(path):
        from .colour import render_colour

        return render_colour(args, path, out)
    model = load_model(path, device=resolve_device(args.device))  # a damaged file says what is wrong first
    if args.region or args.level:
        raise FPMInputError("--region and --level are for mosaic models (fpminr reconstruct --tile); this is a "
                            "single model", path)
    planes = _requested_planes(args, (model.z_min_um, model.z_max_um))
    outside = planes[(planes < model.z_min_um - 1e-6) | (planes > model.z_max_um + 1e-6)]
    if outside.size:
        raise FPMInputError(f"z = {outside[0]:g} um is outside the model's range "
                            f"[{model.z_min_um:g}, {model.z_max_um:g}] um", path)
    hr = tuple(model.hr_shape)
    if args.all_in_focus and args.patch > min(hr):
        raise FPMInputError(f"--patch {args.patch} is larger than the {hr[0]}x{hr[1]} px image", path)
    channels = 2 if (args.phase or (args.all_in_focus and args.focus_measure != "nv")) else 1
    budget.check_memory(budget.render_bytes(hr, len(planes), channels, all_in_focus=args.all_in_focus),
                        f"rendering {len(planes)} planes of {hr[0]}x{hr[1]} px", out,
                        hint="use fewer planes (--z-step, --z-min/--z-max)")
    if not args.all_in_focus:
        _check_output_size(out, len(planes), hr, channels,
                           budget.render_bytes(hr, len(planes), channels))
    if args.raw and not args.all_in_focus:
        raise FPMInputError("--raw is used by --all-in-focus (depth from the measurements) only", Path(args.raw))
    if getattr(args, "calibration", None) and not args.raw:
        raise FPMInputError("--calibration goes with --raw (the calibrated training data)", Path(args.calibration))
    if args.all_in_focus:
        from ..volume import all_in_focus

        raw = _training_raw(args, model) if args.raw else None
        if args.focus_measure == "data" and raw is None:
            raise FPMInputError("--focus-measure data needs --raw (the raw data the model was trained on)", path)
        use_phase = args.focus_measure != "nv"
        amplitude, phase = _render_planes(model, planes, with_phase=use_phase, quiet=args.quiet)
        fused, depth = all_in_focus(amplitude, planes, patch=args.patch, stride=args.stride, phase=phase,
                                    measure=args.focus_measure, raw=raw, pupil=model.optics.pupil)
        has_depth = np.isfinite(depth)
        z_repr = float(np.median(depth[has_depth])) if has_depth.any() else float(np.median(planes))
        write_stack(out, StackArrays(fused[None], None, np.array([z_repr]), model.dx_hr_um, depth_um=depth))
        span = (f"depth {np.min(depth[has_depth]):.2f}..{np.max(depth[has_depth]):.2f} um "
                f"on {100 * has_depth.mean():.0f}% of the field") if has_depth.any() else "no structure found"
        print(f"all-in-focus {out}  ({span})")
        return 0
    _write_rendered(model, planes, out, with_phase=args.phase, quiet=args.quiet)
    print(f"stack      {out}  ({len(planes)} planes)")
    return 0


def _render_planes(model, planes: np.ndarray, with_phase: bool, quiet: bool = False, batch: int = 8):
    bar = ProgressLine("render", enabled=not quiet)
    amps, phases = [], []
    for start in range(0, len(planes), batch):
        amp, pha = model.render(planes[start:start + batch])
        amps.append(amp)
        if with_phase:
            phases.append(pha)
        bar.update((start + len(amp)) / len(planes), f"{start + len(amp)}/{len(planes)} planes")
    bar.close()
    return np.concatenate(amps), (np.concatenate(phases) if with_phase else None)


def _write_rendered(model, planes: np.ndarray, out: Path, with_phase: bool, quiet: bool = False) -> None:
    from ..io.stack_files import StackArrays, write_stack

    amplitude, phase = _render_planes(model, planes, with_phase, quiet)
    write_stack(out, StackArrays(amplitude, phase, planes, model.dx_hr_um))


def add_render_parser(sub) -> None:
    p = sub.add_parser("render", help="render planes, or an all-in-focus image, from a model")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True)
    _add_z_options(p)
    p.add_argument("--all-in-focus", action="store_true", help="fused image + depth map (NaN without structure)")
    p.add_argument("--focus-measure", choices=("auto", "data", "edges", "nv"), default="auto",
                   help="all-in-focus depth: from the measurements (data; auto with --raw), complex-field "
                        "edges (auto without --raw) or amplitude normal variance (nv)")
    p.add_argument("--raw", help="raw data the model was trained on: depth from the measurements "
                                 "(recommended for models, whose slices change little with z)")
    p.add_argument("--crop", type=int, nargs=4, metavar=("TOP", "LEFT", "HEIGHT", "WIDTH"),
                   help="the --crop given to reconstruct (with --raw)")
    p.add_argument("--calibration", metavar="FILE", help="the --calibration given to reconstruct (with --raw)")
    p.add_argument("--force-calibration", action="store_true", dest="force_calibration",
                   help="apply --calibration FILE even when it was made for other data (a warning, not a refusal)")
    _add_optics_overrides(p)
    p.add_argument("--patch", type=int, default=64, help="all-in-focus patch (hr px)")
    p.add_argument("--stride", type=int, default=16, help="all-in-focus patch stride (hr px)")
    p.add_argument("--phase", action="store_true", help="also write the phase")
    p.add_argument("--device", default="auto")
    p.add_argument("-q", "--quiet", action="store_true")
    _add_limits(p)
    from .tiles import add_region_options

    add_region_options(p)
    p.set_defaults(func=cmd_render)
