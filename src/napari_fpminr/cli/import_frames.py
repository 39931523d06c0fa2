"""``fpminr import``: a folder of frames plus a board description -> native TIFF + JSON sidecar.

    fpminr import "DIR/image*.png" -o OUT.tif --led-positions leds.csv --led-distance-mm 180 \\
        --wavelength-um 0.532 --na-obj 0.1 --mag 3 --pixel-um 3.45

All the work is :func:`napari_fpminr.io.frames.import_frames`; this module maps options to it,
guards the outputs and prints one summary screen.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import FPMInputError
from .common import _output_guard


def add_import_parser(sub) -> None:
    from ..io.frames import LED_ORDERS

    p = sub.add_parser("import", help="turn a folder of frames (PNG/TIFF, one per LED) and the LED board into "
                                      "a native data set (OUT.tif + OUT.json)")
    p.add_argument("frames", nargs="+", help="a folder, a quoted pattern such as 'DIR/image*.png', or files "
                                             "(taken in natural order: image2 before image10)")
    p.add_argument("-o", "--out", required=True, help="TIFF stack to write; the sidecar OUT.json goes beside it")
    g = p.add_argument_group("LED board (board coordinates in mm: x along image columns, y along rows, origin "
                             "below the sample centre; see the user guide)")
    g.add_argument("--led-positions", metavar="CSV", help="CSV with header x_mm,y_mm, one row per frame in frame order")
    g.add_argument("--led-grid", metavar="ROWSxCOLS", help="a regular grid instead of a CSV, e.g. 8x8")
    g.add_argument("--led-pitch-mm", type=float, metavar="P", help="grid pitch (mm)")
    g.add_argument("--led-order", choices=LED_ORDERS, default="raster",
                   help="grid acquisition order (default raster: row by row)")
    g.add_argument("--led-centre-mm", type=float, nargs=2, metavar=("X", "Y"), default=(0.0, 0.0),
                   help="position of the grid centre / the CSV origin relative to the optical axis (mm)")
    g.add_argument("--led-distance-mm", type=float, metavar="D", help="board to sample plane (mm)")
    g.add_argument("--slab-thickness-mm", type=float, default=0.0, help="glass slide under the sample (mm)")
    g.add_argument("--slab-index", type=float, default=1.52, help="its refractive index (default 1.52)")
    g = p.add_argument_group("optics (required: the frames do not say them)")
    g.add_argument("--wavelength-um", type=float, help="illumination wavelength (µm)")
    g.add_argument("--na-obj", type=float, help="objective NA")
    g.add_argument("--mag", type=float, help="magnification")
    g.add_argument("--pixel-um", type=float, help="camera pixel (µm)")
    g = p.add_argument_group("camera")
    g.add_argument("--saturation", metavar="LEVEL", default="auto",
                   help="value at which the camera saturated (default: the integer type's maximum, e.g. 255; "
                        "'none' for no saturation)")
    dark = g.add_mutually_exclusive_group()
    dark.add_argument("--dark-level", type=float, metavar="L", help="constant dark background (camera units)")
    dark.add_argument("--dark-frame", metavar="FILE", help="a frame taken with all LEDs off")
    p.set_defaults(func=cmd_import)


def _saturation(text: str) -> float | str | None:
    if text.strip().lower() == "auto":
        return "auto"
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise FPMInputError(f"--saturation must be a number, 'auto' or 'none', got {text!r}") from None


def _board(args: argparse.Namespace):
    from ..io.frames import BoardSpec, parse_grid

    if args.led_positions and args.led_grid:
        raise FPMInputError("give --led-positions or --led-grid, not both")
    return BoardSpec(distance_mm=args.led_distance_mm,
                     csv_path=Path(args.led_positions) if args.led_positions else None,
                     grid=parse_grid(args.led_grid) if args.led_grid else None,
                     pitch_mm=args.led_pitch_mm, order=args.led_order, centre_mm=tuple(args.led_centre_mm),
                     slab_thickness_mm=args.slab_thickness_mm, slab_index=args.slab_index)


def _outputs(out: Path) -> list[Path]:
    return [out, out.with_suffix(".json"), out.with_name(out.stem + ".dark.tif")]


def _check_outputs(out: Path, inputs: list[Path]) -> None:
    """The TIFF must be a .tif/.tiff; none of the files written may replace an input."""
    from ..io.safety import check_output_path

    if out.suffix.lower() not in (".tif", ".tiff"):
        raise FPMInputError("the output is a native TIFF stack: name it OUT.tif", out)
    for path in _outputs(out):
        check_output_path(path, inputs)


def cmd_import(args: argparse.Namespace) -> int:
    from ..io.frames import frame_files, frames_label, import_frames

    out = Path(args.out)
    board = _board(args)
    companions = [Path(p) for p in (args.led_positions, args.dark_frame) if p]
    inputs = frame_files(args.frames, ignore=companions) + companions
    _check_outputs(out, inputs)
    with _output_guard(out, inputs):
        result = import_frames(args.frames, out, board, wavelength_um=args.wavelength_um, na_obj=args.na_obj,
                               mag=args.mag, pixel_um=args.pixel_um, saturation_level=_saturation(args.saturation),
                               dark_level=args.dark_level, dark_frame=args.dark_frame)
    print(f"imported    {frames_label(args.frames)}")
    print(result.summary())
    print("next        fpminr info " + _quoted(out) + " --check")
    print("            fpminr reconstruct " + _quoted(out) + " -o " + _quoted(out.with_suffix(".fpminr")))
    return 0


def _quoted(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))
