"""``fpminr`` command line (DESIGN.md §4).

    fpminr info RAW_OR_MODEL
    fpminr simulate OUT [--preset NAME] [--size N] [--seed S] [--noise F]
    fpminr reconstruct RAW -o OUT [--method inr|fpm] [--z-min A --z-max B [--z-step S] | --z Z ...] ...
    fpminr calibrate RAW [-o RAW.calib.json]
    fpminr render MODEL -o OUT (--z Z ... | --z-step S | --all-in-focus [--raw RAW]) [--phase]
    fpminr import FRAMES... -o OUT.tif (--led-positions CSV | --led-grid RxC --led-pitch-mm P) --led-distance-mm D ...
    fpminr gui [FILE]

Progress goes to stderr; results and paths to stdout. Bad input exits with code 2 and one line
``fpminr: error: FILE: problem`` (no traceback), and never leaves a partial output file.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from ..errors import FPMInputError
from .basic import cmd_gui, cmd_info, cmd_simulate
from .calibrate import add_calibrate_parser
from .common import _add_limits, _add_optics_overrides, z_planes
from .import_frames import add_import_parser
from .reconstruct import _fit_memory, add_reconstruct_parser, fpm_progress_text, inr_progress_text
from .render import add_render_parser

__all__ = ["main", "build_parser", "z_planes", "fpm_progress_text", "inr_progress_text", "_fit_memory"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fpminr", description="FPM z-stack reconstruction (FPM-INR).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="describe a raw-data file, a model or a stack")
    p.add_argument("path")
    p.add_argument("--check", action="store_true",
                   help="raw data: check them against the stated geometry (saturation, background, orientation, "
                        "frames that do not fit) and say what to do")
    _add_optics_overrides(p)
    _add_limits(p)
    p.set_defaults(func=cmd_info)

    from ..simulate import PRESETS

    p = sub.add_parser("simulate", help="write a synthetic raw dataset and its ground truth")
    p.add_argument("out", help="raw file to write (.tif native, .mat FPM-INR, .hdf5 PtyLab)")
    p.add_argument("--preset", default="layers", choices=sorted(PRESETS))
    p.add_argument("--size", type=int, default=64, help="raw image size in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=0.0, help="relative noise level (0 = noiseless)")
    p.set_defaults(func=cmd_simulate)

    add_reconstruct_parser(sub)

    add_calibrate_parser(sub)

    add_render_parser(sub)

    add_import_parser(sub)

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
    from ..io.budget import limits, parse_size

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



