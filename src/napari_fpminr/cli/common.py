"""Shared pieces of the command line: z planes, raw reading, output guards, common options."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from ..errors import FPMInputError

MODEL_SUFFIX = ".fpminr"
STACK_SUFFIXES = (".npz", ".tif", ".tiff", ".zarr")
DEFAULT_Z_RANGE_UM = (-20.0, 20.0)
DEFAULT_Z_STEP_UM = 0.25
MAX_PLANES = 100_000  # more planes than any stack needs; refused before the plane list is built


def z_planes(z_min_um: float, z_max_um: float, z_step_um: float) -> np.ndarray:
    """Planes from ``z_min_um`` to ``z_max_um`` inclusive, spaced ``z_step_um`` (±20/0.25 -> 161)."""
    from ..recon.schedule import default_z_planes

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
    from ..io import budget

    size = budget.stack_bytes(n_planes, hr_shape, channels)
    budget.check_output(size, f"{n_planes} planes of {hr_shape[0]}x{hr_shape[1]} px", out,
                        hint="use fewer planes (--z-step) or a model (.fpminr), which renders any plane later")
    if size >= ANNOUNCE_OUTPUT or memory >= ANNOUNCE_MEMORY:
        print(f"estimate: ~{budget.format_bytes(memory)} peak memory, ~{budget.format_bytes(size)} output "
              f"(uncompressed) for {n_planes} planes; limit with --max-memory / --max-output", file=sys.stderr)


def _output_guard(out: Path, inputs):
    """Refuse an output that would replace an input or cannot be written; hold its write lock."""
    from ..io.safety import check_output_path, output_lock

    check_output_path(out, inputs, folder_output=out.suffix.lower() == ".zarr")
    return output_lock(out)


def input_files(path) -> list[Path]:
    from ..io.safety import input_files as files

    return files(path)


def _default_z_range(raw) -> tuple[float, float]:
    lo, hi = DEFAULT_Z_RANGE_UM
    if raw.z_um is not None:  # make sure the stated sample depth is inside the range
        lo, hi = min(lo, raw.z_um - 10.0), max(hi, raw.z_um + 10.0)
    return lo, hi


def _training_raw(args, model):
    """The raw data ``--raw`` (with ``--crop`` and optics overrides), checked to be the model's."""
    raw_path = Path(args.raw)
    raw = _read_raw(args, raw_path)
    whole = raw
    if args.crop:
        raw = _crop(raw, args.crop, raw_path)
    raw = _as_prepared(args, raw, model.meta.get("preparation"), whole)
    if not model.trained_on(raw):
        raise FPMInputError("these raw data are not the ones the model was trained on (size or content hash "
                            "differs); pass the same file, --crop, --calibration and optics options as to 'fpminr reconstruct'",
                            raw_path)
    return raw


def _as_prepared(args, raw, preparation: dict | None, whole=None):
    """``raw`` as the model saw it in training: the ``--calibration`` file applied (refused when its
    fingerprint names other data than ``whole``, the un-cropped file, unless ``--force-calibration``),
    or else the preparation recorded in the model (real-data defaults: background, calibration,
    frames left out)."""
    from ..calib.prepare import replay

    if getattr(args, "calibration", None):
        from ..io.calibration_file import check_data, data_fingerprint, read_calibration

        cal = read_calibration(args.calibration)
        if cal.n_leds != raw.n_leds:
            raise FPMInputError(f"calibration is for {cal.n_leds} LEDs, the raw data have {raw.n_leds}", args.calibration)
        full = raw if whole is None else whole
        check_data(cal, lambda: data_fingerprint(full.n_leds, full.lr_shape, lambda leds: full.intensities[leds]),
                   args.calibration, force=getattr(args, "force_calibration", False))
        return cal.apply(raw)
    return replay(raw, preparation) if preparation else raw


def _read_raw(args, path: Path):
    from ..io import read_raw

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


