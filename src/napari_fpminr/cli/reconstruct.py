"""``fpminr reconstruct``: a conventional stack (fpm) or a trained model (inr)."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import FPMInputError
from ..progress import ProgressLine, format_seconds
from .common import (MODEL_SUFFIX, STACK_SUFFIXES, _add_limits, _add_optics_overrides, _add_z_options,
                     _check_output_size, _crop, _default_z_range, _output_guard, _read_raw, _requested_planes,
                     input_files)
from .calibrate import add_calibration_options, apply_calibration_args, calib_fit_kwargs, calibration_text
from .render import _write_rendered


def cmd_reconstruct(args) -> int:
    if getattr(args, "colour", False) or (isinstance(args.raw, list) and len(args.raw) > 1):
        if not getattr(args, "colour", False):
            raise FPMInputError(f"{len(args.raw)} raw files given: add --colour for a red, green, blue set, "
                                "or reconstruct one file at a time", Path(args.raw[1]))
        from .colour import cmd_reconstruct_colour

        return cmd_reconstruct_colour(args)
    if isinstance(args.raw, list):
        args.raw = args.raw[0]
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
    from ..io import budget

    if getattr(args, "tile", None):
        from .tiles import run_tiled

        return run_tiled(args, raw_path, out)
    raw = _read_raw(args, raw_path)
    if args.crop:
        raw = _crop(raw, args.crop, raw_path)
    planes = _requested_planes(args, _default_z_range(raw))
    # every refusal (memory, output size, z range) comes before the preparation's work and its lines
    if args.method == "fpm":
        memory = budget.fpm_bytes(raw.n_leds, raw.lr_shape, raw.hr_shape, len(planes))
        budget.check_memory(memory, f"a conventional stack of {len(planes)} planes of "
                            f"{raw.hr_shape[0]}x{raw.hr_shape[1]} px", out,
                            hint="use fewer planes (--z-step, --z-min/--z-max) or --crop")
        _check_output_size(out, len(planes), raw.hr_shape, 2, memory)
        return _reconstruct_fpm(args, _prepare(args, raw), planes, out)
    if not planes.max() > planes.min():
        raise FPMInputError(f"a model needs a z range, got the single plane z = {planes[0]:g} um: give "
                            "--z-max above --z-min (or use --method fpm for one plane)", raw_path)
    if out.suffix.lower() != MODEL_SUFFIX:
        memory = budget.render_bytes(raw.hr_shape, len(planes), 2)
        budget.check_memory(memory, f"rendering {len(planes)} planes", out,
                            hint="use fewer planes or write a model (.fpminr) and render from it")
        _check_output_size(out, len(planes), raw.hr_shape, 2, memory)
    config = _inr_config(args, raw, out)
    raw = _prepare(args, raw)
    return _reconstruct_inr(args, raw, planes, out, dataclasses.replace(config, recover_pupil=bool(args.recover_pupil)))


def _prepare(args, raw):
    """The data to reconstruct under the real-data defaults (:mod:`napari_fpminr.calib.prepare`).

    Translates the options: ``--calibration FILE`` (applied, no fit), ``--calibrate`` /
    ``--no-calibrate``, ``--recover-pupil`` / ``--no-recover-pupil``, ``--correct-intensity`` / ``--no-correct-intensity``, ``--keep-bad-frames``,
    ``--orientation``; sets ``args.recover_pupil`` to the decision and prints one line per decision.
    """
    from ..calib.prepare import PrepareOptions, iter_prepare

    calibrate = None
    if getattr(args, "calibration", None):
        raw = apply_calibration_args(args, raw)
        calibrate = False
    elif getattr(args, "calibrate", None) is not None:
        calibrate = bool(args.calibrate)
    opts = PrepareOptions(calibrate=calibrate, recover_pupil=args.recover_pupil,
                          correct_intensity=getattr(args, "correct_intensity", None),
                          drop_bad_frames=False if getattr(args, "keep_bad_frames", False) else None,
                          orientation=getattr(args, "orientation", "auto"), calib_kwargs=calib_fit_kwargs(args))
    bar = ProgressLine("prepare", enabled=not args.quiet and not raw.is_simulated)
    last = None
    for last in iter_prepare(raw, opts, device=args.device):
        bar.update(last.fraction, last.message[:90])
    bar.close("ready")
    prep = last.preparation
    if prep.calibration is not None and not getattr(args, "calibration", None):
        print(calibration_text(prep.calibration, raw), file=sys.stderr)
    if getattr(args, "calibration", None):
        prep.decisions.insert(1, f"calibration: applied from {args.calibration}")
    for line in prep.decisions:
        print(line, file=sys.stderr)
    args.recover_pupil = prep.recover_pupil
    data = prep.raw
    if prep.calibration is not None or prep.dropped or prep.background:
        from dataclasses import replace

        data = replace(data, meta=dict(data.meta, preparation=prep.record()))
    return data


def _reconstruct_fpm(args, raw, planes: np.ndarray, out: Path) -> int:
    from ..io.stack_files import StackArrays, write_stack
    from ..recon.conventional import iter_conventional

    bar = ProgressLine("fpm", enabled=not args.quiet)
    print(f"conventional FPM: {len(planes)} planes {planes[0]:.2f}..{planes[-1]:.2f} um, "
          f"{args.iterations} iterations", file=sys.stderr)
    stack = None
    for event in iter_conventional(raw, planes, iterations=args.iterations, mode=args.mode,
                                   pupil_update=args.recover_pupil, device=args.device,
                                   adaptive_step=getattr(args, "step", None) == "adaptive"):
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


def _inr_config(args, raw, out: Path):
    """The INR's :class:`TrainConfig` from the options, fitted to the memory budget (refused when even
    one LED at a time does not fit); the pupil decision is the preparation's, set afterwards."""
    from ..recon.train import TrainConfig

    config_kwargs = {"device": args.device, "seed": args.seed, "recover_pupil": bool(args.recover_pupil),
                     "init": args.init, "representation": "mlp" if args.init == "random" else args.representation}
    for flag, field in (("epochs", "epochs"), ("rank", "rank")):
        if getattr(args, flag, None) is not None:
            config_kwargs[field] = getattr(args, flag)
    if getattr(args, "step", None):
        config_kwargs["seed_adaptive_step"] = args.step == "adaptive"
    return _fit_memory(TrainConfig(**config_kwargs), raw, out)


def _reconstruct_inr(args, raw, planes: np.ndarray, out: Path, config) -> int:
    from ..io.model_file import save_model
    from ..recon.train import iter_train

    z_min, z_max = float(planes.min()), float(planes.max())
    from ..device import resolve_device

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
    if "calibration" in raw.meta:  # model files record the illumination calibration used
        model.meta["calibration"] = raw.meta["calibration"]
    if "preparation" in raw.meta:  # ... and the whole preparation, so that --raw can reproduce the training data
        model.meta["preparation"] = raw.meta["preparation"]
    if out.suffix.lower() == MODEL_SUFFIX:
        from ..io.safety import writing

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

    from ..device import resolve_device
    from ..io import budget

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


def add_reconstruct_parser(sub) -> None:
    p = sub.add_parser("reconstruct", help="reconstruct a z-stack (fpm) or train a model (inr)")
    p.add_argument("raw", nargs="+", help="raw data file (three with --colour: red, green, blue)")
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
    p.add_argument("--recover-pupil", action="store_true", default=None,
                   help="jointly recover the pupil aberration (default for measured data)")
    p.add_argument("--no-recover-pupil", action="store_false", dest="recover_pupil",
                   help="keep the ideal pupil (the default for simulated data)")
    p.add_argument("--correct-intensity", action="store_true", default=None,
                   help="fit a residual brightness gain per LED in the solver (off by default)")
    p.add_argument("--no-correct-intensity", action="store_false", dest="correct_intensity",
                   help="trust the stated or calibrated LED brightness as it is (the default)")
    p.add_argument("--keep-bad-frames", action="store_true",
                   help="keep frames the model cannot fit (left out by default for measured data)")
    p.add_argument("--orientation", choices=("auto", "stated"), default="auto",
                   help="board orientation: find it among the 8 turns/mirrors (auto, default) or keep the file's")
    p.add_argument("--step", choices=("constant", "adaptive"),
                   help="quasi-Newton step of fpm and of the inr seed: constant, or halved whenever a pass "
                        "stalls (default: adaptive with --tile, constant otherwise)")
    p.add_argument("--crop", type=int, nargs=4, metavar=("TOP", "LEFT", "HEIGHT", "WIDTH"),
                   help="reconstruct a raw-pixel region only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_limits(p)
    add_calibration_options(p)
    from .colour import add_colour_options

    add_colour_options(p)
    from .tiles import add_tiling_options

    add_tiling_options(p)
    p.set_defaults(func=cmd_reconstruct)
