"""``fpminr`` command line (DESIGN.md §4).

    fpminr info RAW_OR_MODEL
    fpminr simulate OUT [--preset NAME] [--size N] [--seed S] [--noise F]
    fpminr reconstruct RAW -o OUT [--method inr|fpm] [--z-min A --z-max B [--z-step S] | --z Z ...] ...
    fpminr render MODEL -o OUT (--z Z ... | --z-step S | --all-in-focus [--raw RAW]) [--phase]
    fpminr gui [FILE]

Progress goes to stderr; results and paths to stdout. Bad input exits with code 2 and one line
``fpminr: error: FILE: problem`` (no traceback), and never leaves a partial output file.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from .errors import FPMInputError
from .progress import ProgressLine, format_seconds

MODEL_SUFFIX = ".fpminr"
STACK_SUFFIXES = (".npz", ".tif", ".tiff", ".zarr")
DEFAULT_Z_RANGE_UM = (-20.0, 20.0)
DEFAULT_Z_STEP_UM = 0.25
MAX_PLANES = 100_000  # more planes than any stack needs; refused before the plane list is built


# ---- z sampling ---------------------------------------------------------------------------
def z_planes(z_min_um: float, z_max_um: float, z_step_um: float) -> np.ndarray:
    """Planes from ``z_min_um`` to ``z_max_um`` inclusive, spaced ``z_step_um`` (±20/0.25 -> 161)."""
    from .recon.schedule import default_z_planes

    for name, value in (("--z-min", z_min_um), ("--z-max", z_max_um), ("--z-step", z_step_um)):
        _finite(name, value)
    if not z_step_um > 0:
        raise FPMInputError(f"--z-step must be positive, got {z_step_um}")
    if z_max_um < z_min_um:
        raise FPMInputError(f"--z-max ({z_max_um}) is below --z-min ({z_min_um})")
    n = (z_max_um - z_min_um) / z_step_um + 1
    if n > MAX_PLANES:
        raise FPMInputError(f"--z-step {z_step_um:g} over {z_min_um:g}..{z_max_um:g} um would give {n:.3g} planes "
                            f"(at most {MAX_PLANES}); use a larger --z-step")
    return default_z_planes(z_min_um, z_max_um, z_step_um)


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise FPMInputError(f"{name} must be a finite number, got {value}")
    return value


def _requested_planes(args, default_range: tuple[float, float]) -> np.ndarray:
    if args.z:
        for value in args.z:
            _finite("--z", value)
        if len(args.z) > MAX_PLANES:
            raise FPMInputError(f"{len(args.z)} planes given with --z (at most {MAX_PLANES})")
        return np.asarray(sorted(args.z), dtype=float)
    z_min = default_range[0] if args.z_min is None else args.z_min
    z_max = default_range[1] if args.z_max is None else args.z_max
    return z_planes(z_min, z_max, DEFAULT_Z_STEP_UM if args.z_step is None else args.z_step)


# ---- commands -----------------------------------------------------------------------------
def cmd_info(args) -> int:
    path = Path(args.path)
    if path.suffix.lower() == MODEL_SUFFIX:
        from .io.model_file import model_info

        print(model_info(path))
        return 0
    if path.suffix.lower() == ".npz" and path.exists():
        from .io.stack_files import read_stack_npz

        s = read_stack_npz(path)
        print(f"stack {path}: {s.amplitude.shape[0]} planes of {s.amplitude.shape[1]}x{s.amplitude.shape[2]} px, "
              f"pixel {s.dx_um:.4f} um, z {np.min(s.z_um):.3f}..{np.max(s.z_um):.3f} um"
              + (", with depth map" if s.depth_um is not None else ""))
        return 0
    raw = _read_raw(args, path)
    print(f"raw data {path} ({raw.meta.get('format', 'unknown format')})")
    print(f"images         {raw.n_leds} x {raw.lr_shape[0]} x {raw.lr_shape[1]} px"
          f"  -> reconstruction {raw.hr_shape[0]} x {raw.hr_shape[1]} px")
    print(raw.optics.summary())
    if raw.z_um is not None:
        print(f"stated defocus {raw.z_um:+.2f} um")
    return 0


def cmd_simulate(args) -> int:
    from .io import write_raw
    from .io.safety import check_output_path, writing
    from .optics.simulate import simulate

    out = check_output_path(Path(args.out))
    if not 8 <= args.size <= 4096:
        raise FPMInputError(f"--size must be 8..4096 raw pixels, got {args.size}")
    sim = simulate(preset=args.preset, size=args.size, seed=args.seed, noise=args.noise)
    raw_path = write_raw(sim.raw, out)
    truth_path = out.with_name(out.stem + ".truth.npz")
    with writing(truth_path):
        sim.truth.save(truth_path)
    print(f"raw data   {raw_path}")
    print(f"truth      {truth_path}")
    return 0


def cmd_reconstruct(args) -> int:
    raw_path = Path(args.raw)
    out = Path(args.output)
    suffix = out.suffix.lower()
    if args.method == "fpm" and suffix not in STACK_SUFFIXES:
        raise FPMInputError(f"--method fpm writes a stack: use -o with {', '.join(STACK_SUFFIXES)}", out)
    if args.method == "inr" and suffix not in STACK_SUFFIXES + (MODEL_SUFFIX,):
        raise FPMInputError(f"--method inr writes a model (.fpminr) or a stack ({', '.join(STACK_SUFFIXES)})", out)
    with _output_guard(out, input_files(raw_path)):
        return _reconstruct(args, raw_path, out)


def _reconstruct(args, raw_path: Path, out: Path) -> int:
    from .io import budget

    raw = _read_raw(args, raw_path)
    if args.crop:
        raw = _crop(raw, args.crop, raw_path)
    default_range = _default_z_range(raw)
    planes = _requested_planes(args, default_range)
    if args.method == "fpm":
        memory = budget.fpm_bytes(raw.n_leds, raw.lr_shape, raw.hr_shape, len(planes))
        budget.check_memory(memory, f"a conventional stack of {len(planes)} planes of "
                            f"{raw.hr_shape[0]}x{raw.hr_shape[1]} px", out,
                            hint="use fewer planes (--z-step, --z-min/--z-max) or --crop")
        _check_output_size(out, len(planes), raw.hr_shape, 2, memory)
        return _reconstruct_fpm(args, raw, planes, out)
    if not planes.max() > planes.min():
        raise FPMInputError(f"a model needs a z range, got the single plane z = {planes[0]:g} um: give "
                            "--z-max above --z-min (or use --method fpm for one plane)", raw_path)
    if out.suffix.lower() != MODEL_SUFFIX:
        memory = budget.render_bytes(raw.hr_shape, len(planes), 2)
        budget.check_memory(memory, f"rendering {len(planes)} planes", out,
                            hint="use fewer planes or write a model (.fpminr) and render from it")
        _check_output_size(out, len(planes), raw.hr_shape, 2, memory)
    return _reconstruct_inr(args, raw, planes, out)


def _crop(raw, crop, path: Path):
    """``--crop TOP LEFT HEIGHT WIDTH`` inside the raw images, or a one-line error."""
    top, left, height, width = crop
    h, w = raw.lr_shape
    if top < 0 or left < 0 or height < 1 or width < 1 or top + height > h or left + width > w:
        raise FPMInputError(f"--crop {top} {left} {height} {width} is not inside the {h}x{w} px raw images "
                            "(offsets >= 0, sizes >= 1, region within the image)", path)
    return raw.crop(top, left, height, width)


#: jobs whose estimates reach these sizes announce them on stderr before they start
ANNOUNCE_MEMORY = 1 << 30
ANNOUNCE_OUTPUT = 256 << 20


def _check_output_size(out: Path, n_planes: int, hr_shape, channels: int, memory: int = 0) -> None:
    """Refuse a stack larger than ``--max-output`` or the free space; announce big ones."""
    from .io import budget

    size = budget.stack_bytes(n_planes, hr_shape, channels)
    budget.check_output(size, f"{n_planes} planes of {hr_shape[0]}x{hr_shape[1]} px", out,
                        hint="use fewer planes (--z-step) or a model (.fpminr), which renders any plane later")
    if size >= ANNOUNCE_OUTPUT or memory >= ANNOUNCE_MEMORY:
        print(f"estimate: ~{budget.format_bytes(memory)} peak memory, ~{budget.format_bytes(size)} output "
              f"(uncompressed) for {n_planes} planes; limit with --max-memory / --max-output", file=sys.stderr)


def _output_guard(out: Path, inputs):
    """Refuse an output that would replace an input or cannot be written; hold its write lock."""
    from .io.safety import check_output_path, output_lock

    check_output_path(out, inputs, folder_output=out.suffix.lower() == ".zarr")
    return output_lock(out)


def input_files(path) -> list[Path]:
    from .io.safety import input_files as files

    return files(path)


def _default_z_range(raw) -> tuple[float, float]:
    lo, hi = DEFAULT_Z_RANGE_UM
    if raw.z_um is not None:  # make sure the stated sample depth is inside the range
        lo, hi = min(lo, raw.z_um - 10.0), max(hi, raw.z_um + 10.0)
    return lo, hi


def _reconstruct_fpm(args, raw, planes: np.ndarray, out: Path) -> int:
    from .io.stack_files import StackArrays, write_stack
    from .recon.conventional import iter_conventional

    bar = ProgressLine("fpm", enabled=not args.quiet)
    print(f"conventional FPM: {len(planes)} planes {planes[0]:.2f}..{planes[-1]:.2f} um, "
          f"{args.iterations} iterations", file=sys.stderr)
    stack = None
    for event in iter_conventional(raw, planes, iterations=args.iterations, mode=args.mode,
                                   pupil_update=args.recover_pupil, device=args.device):
        bar.update(event.fraction, fpm_progress_text(event))
        stack = event.stack if event.stack is not None else stack
    bar.close(fpm_progress_text(event) if stack is not None else "done")
    assert stack is not None
    write_stack(out, StackArrays(stack.amplitude, stack.phase, stack.z_um, stack.dx_hr_um))
    print(f"stack      {out}  ({len(stack.z_um)} planes)")
    return 0


def fpm_progress_text(event) -> str:
    """Progress of a conventional run: planes finished (so far) and the pass over the LEDs.

    Planes are solved in batches (all at once when they fit), so "finished" stays 0 until a batch
    ends; the pass counter ``iteration k/n`` shows the progress of the batch in work.
    """
    return (f"planes {event.planes_done}/{event.n_planes} finished, iteration {event.iteration}/{event.n_iterations}"
            f" elapsed {format_seconds(event.elapsed_s)} eta {format_seconds(event.eta_s)}")


def inr_progress_text(event) -> str:
    """One progress line of an INR run: the phase, its loss (none while seeding) and the ETA."""
    where = f"epoch {event.epoch}/{event.n_epochs}" if event.phase == "train" else event.phase
    loss = f" loss {event.loss:.3e}" if np.isfinite(event.loss) else ""
    return f"{where}{loss} eta {format_seconds(event.eta_s)}"


def _reconstruct_inr(args, raw, planes: np.ndarray, out: Path) -> int:
    from .io.model_file import save_model
    from .recon.train import TrainConfig, iter_train

    config_kwargs = {"device": args.device, "seed": args.seed, "recover_pupil": args.recover_pupil,
                     "init": args.init, "representation": "mlp" if args.init == "random" else args.representation}
    for flag, field in (("epochs", "epochs"), ("rank", "rank")):
        if getattr(args, flag, None) is not None:
            config_kwargs[field] = getattr(args, flag)
    config = TrainConfig(**config_kwargs)
    config = _fit_memory(config, raw, out)
    z_min, z_max = float(planes.min()), float(planes.max())
    from .device import resolve_device

    how = (f"{config.init} init, {config.representation}" + (f", {config.epochs} epochs" if config.init == "random" else ""))
    print(f"FPM-INR: z {z_min:.2f}..{z_max:.2f} um, {how}, device {resolve_device(config.device)}", file=sys.stderr)
    bar = ProgressLine("inr", enabled=not args.quiet)
    model = None
    t0 = time.monotonic()
    for event in iter_train(raw, z_min, z_max, config):
        bar.update(event.fraction, inr_progress_text(event))
        model = event.model if event.model is not None else model
    bar.close(f"trained in {format_seconds(time.monotonic() - t0)}")
    assert model is not None
    if out.suffix.lower() == MODEL_SUFFIX:
        from .io.safety import writing

        with writing(out):
            save_model(model, out)
        print(f"model      {out}")
    else:
        _write_rendered(model, planes, out, with_phase=True)
        print(f"stack      {out}  ({len(planes)} planes)")
    return 0


def _fit_memory(config, raw, out: Path):
    """INR training within the memory budget: smaller LED chunks when short, refusal when even one LED is too many.

    Only for CPU training (the budget is the host's memory); a ``led_batch`` already set is kept
    when it fits.
    """
    import dataclasses

    from .device import resolve_device
    from .io import budget

    if resolve_device(config.device).type != "cpu":
        return config
    limit, source = budget.memory_budget()
    q = int(getattr(config, "q", 32))
    need = budget.inr_training_bytes(raw.n_leds, raw.lr_shape, raw.hr_shape, q=q, led_batch=config.led_batch)
    if need <= limit:
        return config
    batch = budget.led_batch_for(limit, raw.n_leds, raw.lr_shape, raw.hr_shape, q=q)
    if not batch:
        budget.check_memory(budget.inr_training_bytes(raw.n_leds, raw.lr_shape, raw.hr_shape, q=q, led_batch=1),
                            f"training on {raw.lr_shape[0]}x{raw.lr_shape[1]} px raw images "
                            f"({raw.hr_shape[0]}x{raw.hr_shape[1]} px reconstruction), even one LED at a time,",
                            out, hint="reconstruct a region with --crop (or tiles of it)")
        batch = 1
    print(f"memory: ~{budget.format_bytes(need)} needed with {config.led_batch or raw.n_leds} LEDs per chunk, "
          f"{budget.format_bytes(limit)} allowed ({source}): using chunks of {batch} LEDs", file=sys.stderr)
    return dataclasses.replace(config, led_batch=batch)


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
    from .device import resolve_device
    from .io import budget
    from .io.model_file import load_model
    from .io.stack_files import StackArrays, write_stack

    model = load_model(path, device=resolve_device(args.device))
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
    if args.all_in_focus:
        from .volume import all_in_focus

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
    from .io.stack_files import StackArrays, write_stack

    amplitude, phase = _render_planes(model, planes, with_phase, quiet)
    write_stack(out, StackArrays(amplitude, phase, planes, model.dx_hr_um))


def cmd_gui(args) -> int:
    from ._napari.launch import main as launch

    return launch([args.path] if args.path else [])


def _training_raw(args, model):
    """The raw data ``--raw`` (with ``--crop`` and optics overrides), checked to be the model's."""
    raw_path = Path(args.raw)
    raw = _read_raw(args, raw_path)
    if args.crop:
        raw = _crop(raw, args.crop, raw_path)
    if not model.trained_on(raw):
        raise FPMInputError("these raw data are not the ones the model was trained on (size or content hash "
                            "differs); pass the same file, --crop and optics options as to 'fpminr reconstruct'",
                            raw_path)
    return raw


def _read_raw(args, path: Path):
    from .io import read_raw

    return read_raw(path, wavelength_um=getattr(args, "wavelength_um", None),
                    na_obj=getattr(args, "na_obj", None), mag=getattr(args, "mag", None),
                    pixel_um=getattr(args, "pixel_um", None), upsample=getattr(args, "upsample", 0) or 0)


# ---- parser -------------------------------------------------------------------------------
def _add_optics_overrides(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("optics overrides (fill in what the file lacks)")
    g.add_argument("--wavelength-um", type=float, help="illumination wavelength (µm)")
    g.add_argument("--na-obj", type=float, help="objective NA")
    g.add_argument("--mag", type=float, help="magnification")
    g.add_argument("--pixel-um", type=float, help="camera pixel (µm)")
    g.add_argument("--upsample", type=int, default=0, help="hr/raw pixel ratio (default: smallest that fits)")


def _add_limits(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("limits (refused up front when an estimate exceeds them)")
    g.add_argument("--max-memory", metavar="SIZE", help="peak memory allowed, e.g. 4G (default: what is available)")
    g.add_argument("--max-output", metavar="SIZE", help="output size allowed, e.g. 500M (default: free disk space)")


def _add_z_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("z planes (µm)")
    g.add_argument("--z-min", type=float)
    g.add_argument("--z-max", type=float)
    g.add_argument("--z-step", type=float, help=f"plane spacing (default {DEFAULT_Z_STEP_UM})")
    g.add_argument("--z", type=float, nargs="+", help="explicit planes")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fpminr", description="FPM z-stack reconstruction (FPM-INR).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="describe a raw-data file, a model or a stack")
    p.add_argument("path")
    _add_optics_overrides(p)
    _add_limits(p)
    p.set_defaults(func=cmd_info)

    from .optics.simulate import PRESETS

    p = sub.add_parser("simulate", help="write a synthetic raw dataset and its ground truth")
    p.add_argument("out", help="raw file to write (.tif native, .mat FPM-INR, .hdf5 PtyLab)")
    p.add_argument("--preset", default="layers", choices=sorted(PRESETS))
    p.add_argument("--size", type=int, default=64, help="raw image size in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=0.0, help="relative noise level (0 = noiseless)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("reconstruct", help="reconstruct a z-stack (fpm) or train a model (inr)")
    p.add_argument("raw")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--method", choices=("inr", "fpm"), default="inr")
    _add_z_options(p)
    _add_optics_overrides(p)
    p.add_argument("--representation", choices=("lowrank", "mlp"), default="lowrank",
                   help="INR representation: band-limited low-rank field (default) or the paper's feature plane + MLP")
    p.add_argument("--init", choices=("seeded", "random"), default="seeded",
                   help="seeded: conventional seed + closed-form init + polish (default); random: the paper's training")
    p.add_argument("--rank", type=int, help="terms of the low-rank field (default 8)")
    p.add_argument("--epochs", type=int, help="epochs of the paper's training (--init random)")
    p.add_argument("--iterations", type=int, default=25, help="FPM iterations per plane")
    p.add_argument("--mode", choices=("batched", "per_plane"), default="batched", help="FPM plane scheduling")
    p.add_argument("--recover-pupil", action="store_true", help="jointly recover the pupil aberration")
    p.add_argument("--crop", type=int, nargs=4, metavar=("TOP", "LEFT", "HEIGHT", "WIDTH"),
                   help="reconstruct a raw-pixel region only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_limits(p)
    p.set_defaults(func=cmd_reconstruct)

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
    _add_optics_overrides(p)
    p.add_argument("--patch", type=int, default=64, help="all-in-focus patch (hr px)")
    p.add_argument("--stride", type=int, default=16, help="all-in-focus patch stride (hr px)")
    p.add_argument("--phase", action="store_true", help="also write the phase")
    p.add_argument("--device", default="auto")
    p.add_argument("-q", "--quiet", action="store_true")
    _add_limits(p)
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("gui", help="open napari with the plugin (and optionally a file)")
    p.add_argument("path", nargs="?")
    p.set_defaults(func=cmd_gui)
    return parser


def _input_of(args) -> str:
    """``"FILE: "`` for the command's main input (for last-resort messages), or ``""``."""
    for name in ("path", "raw", "model", "out"):
        value = getattr(args, name, None)
        if value:
            return f"{value}: "
    return ""


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"fpminr: warning: {' '.join(str(message).split())}", file=sys.stderr)


def _run(args) -> int:
    from .io.budget import limits, parse_size

    max_memory = None if getattr(args, "max_memory", None) is None else parse_size(args.max_memory)
    max_output = None if getattr(args, "max_output", None) is None else parse_size(args.max_output)
    with limits(max_memory, max_output):
        return int(args.func(args) or 0)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = warnings.showwarning
    warnings.showwarning = _one_line_warning
    try:
        return _run(args)
    except FPMInputError as exc:
        print(f"fpminr: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fpminr: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"fpminr: error: {_input_of(args)}out of memory; use --crop or fewer planes", file=sys.stderr)
        return 2
    except RecursionError:
        print(f"fpminr: error: {_input_of(args)}nested too deeply to read (hostile or corrupt metadata?)",
              file=sys.stderr)
        return 2
    except OSError as exc:  # last resort: the writers and readers name their file themselves
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"fpminr: error: {where}{exc.strerror or ' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
