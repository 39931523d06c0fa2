"""Whole-slide options of ``fpminr reconstruct`` (``--tile``) and mosaic rendering (``render --region``).

    fpminr reconstruct SLIDE.tif -o OUT --tile 128 --overlap 16 [--method fpm|inr]
                       [--workers K | --scheduler tcp://HOST:8786] [--led-distance-mm D [--led-pitch-mm P]]

OUT: ``.zarr`` (fpm: OME-Zarr multiscale z-stack written block by block; inr: rendered planes),
``.fpminr`` (inr: one mosaic model), ``.npz``/``.tif`` (the whole field assembled at the end).
Finished tiles are kept in ``OUT.tiles/`` until the output is written: a killed run started
again with the same options computes only the missing tiles (``--keep-tiles`` keeps the folder);
a tile whose files fail their check (content hash, marker) is computed again.
``--calibration FILE`` / ``--calibrate`` reach every tile (:func:`tiles.source.calibrated`) and
enter the job hash. ``--max-memory`` / ``--max-output`` are checked before the first tile starts.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from ..errors import FPMInputError
from ..progress import ProgressLine

__all__ = ["add_tiling_options", "run_tiled", "render_mosaic"]


def add_tiling_options(p) -> None:
    g = p.add_argument_group("whole slides (tiles)")
    g.add_argument("--tile", type=int, help="reconstruct in overlapping tiles of N raw px (whole-slide mode)")
    g.add_argument("--overlap", type=int, default=16, help="raw px shared by neighbouring tiles (default 16)")
    g.add_argument("--workers", type=int, help="local worker processes (default: tiles run in this process)")
    g.add_argument("--scheduler", metavar="ADDRESS",
                   help="an existing dask.distributed scheduler, e.g. tcp://host:8786")
    g.add_argument("--led-distance-mm", type=float,
                   help="LED board distance, for files with NAs only (per-tile NAs)")
    g.add_argument("--led-pitch-mm", type=float, help="LED pitch (with --led-distance-mm; the unit of the offsets)")
    g.add_argument("--centre-na", action="store_true",
                   help="every tile uses the NAs of the frame centre (for comparisons; not recommended)")
    g.add_argument("--guard", type=int, default=0,
                   help="fpm: raw px of context read around each tile, reconstructed and dropped (default 0)")
    g.add_argument("--keep-edge-leds", action="store_true",
                   help="use every LED in every tile (default: leave out each tile's pupil-edge LEDs, whose "
                        "|NA| comes within three raw frequency bins of the objective NA over the tile)")
    g.add_argument("--keep-tiles", action="store_true", help="keep OUT.tiles/ after the output is written")
    g.add_argument("--scheduler-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="give up when no dask worker has been available for this long (default 300)")
    g.add_argument("--dashboard", action="store_true",
                   help="with --workers: serve dask's dashboard on 127.0.0.1:8787 (default: none)")


def _train_options(args) -> dict:
    opts = {"device": args.device, "seed": args.seed, "recover_pupil": args.recover_pupil, "init": args.init,
            "representation": "mlp" if args.init == "random" else args.representation}
    if getattr(args, "correct_intensity", None):
        opts["intensity_correction"] = True
    for flag in ("epochs", "rank"):
        if getattr(args, flag, None) is not None:
            opts[flag] = getattr(args, flag)
    return opts


def build_job(args, raw_path: Path, out: Path):
    """The :class:`TiledJob` the options describe (source opened lazily where possible)."""
    from ..tile_layout import TileLayout
    from ..tiles.local_na import tile_leds
    from ..tiles.run import TiledJob, work_dir_for
    from ..tiles.source import calibrated, open_source
    from .common import _default_z_range, _requested_planes

    if args.crop:
        raise FPMInputError("--crop and --tile do not go together: tiles cover the whole frame")
    if args.workers is not None and args.workers < 1:
        raise FPMInputError(f"--workers must be >= 1, got {args.workers}")
    if not args.scheduler_timeout > 0:
        raise FPMInputError(f"--scheduler-timeout must be positive seconds, got {args.scheduler_timeout}")
    source = open_source(raw_path, wavelength_um=args.wavelength_um, na_obj=args.na_obj, mag=args.mag,
                         pixel_um=args.pixel_um, upsample=args.upsample or 0)
    _real_data_defaults(args, source.header)
    calibration = _tile_calibration(args, source)
    if calibration is not None:
        source = calibrated(source, calibration)
    header = source.header
    layout = TileLayout(source.frame_shape, args.tile, args.overlap, header.optics.upsample, header.optics.dx_lr_um)
    planes = _requested_planes(args, _default_z_range(header))
    if args.method == "inr" and not planes.max() > planes.min():
        raise FPMInputError(f"a model needs a z range, got the single plane z = {planes[0]:g} um", raw_path)
    leds = None if args.centre_na else tile_leds(header, args.led_distance_mm, args.led_pitch_mm)
    if leds is None and not args.centre_na and layout.n_tiles > 1:
        print("tiles: the file gives NAs only: every tile uses the centre's NAs (pass --led-distance-mm for "
              "per-tile illumination angles)", file=sys.stderr)
    if args.method == "fpm":
        options = {"iterations": args.iterations, "mode": args.mode, "recover_pupil": args.recover_pupil,
                   "device": args.device}
        if getattr(args, "correct_intensity", None):
            options["correct_intensity"] = True
        if args.guard:
            if args.guard < 0:
                raise FPMInputError(f"--guard must be >= 0 raw px, got {args.guard}")
            options["guard"] = int(args.guard)
    else:
        options = {"train": _train_options(args)}
    options["edge_leds"] = "keep" if args.keep_edge_leds else "drop"
    options["step"] = getattr(args, "step", None) or "adaptive"
    return TiledJob(source, layout, args.method, planes, work_dir_for(out), leds=leds, options=options,
                    calibration=calibration)


def _real_data_defaults(args, header) -> None:
    """The real-data defaults of :mod:`napari_fpminr.calib.prepare` that tiles take: a measurement is
    calibrated (on the central window, once for all tiles) and its pupil recovered unless asked
    otherwise; one line per decision. (Per-tile frame rejection is not done for tiles.)"""
    measured = not header.is_simulated
    if getattr(args, "calibration", None) is None and getattr(args, "calibrate", None) is None:
        args.calibrate = measured
        print(f"tiles: {'a measurement: calibration fitted on the central window (--no-calibrate opts out)' if measured else 'a simulation: the stated geometry'}",
              file=sys.stderr)
    if args.recover_pupil is None:
        args.recover_pupil = measured
        print(f"tiles: pupil {'recovered (--no-recover-pupil opts out)' if measured else 'ideal disk'}", file=sys.stderr)
    if getattr(args, "correct_intensity", None):
        print("tiles: LED brightness refined per LED by the solver (asked)", file=sys.stderr)


def _tile_calibration(args, source):
    """The calibration ``--calibration FILE`` names (checked against the frame's data), or one fitted by
    ``--calibrate`` on a central window of the frame, or ``None``."""
    from ..io.calibration_file import check_data, data_fingerprint, read_calibration
    from .calibrate import _fit, calibration_text

    header = source.header
    path = getattr(args, "calibration", None)
    if path:
        cal = read_calibration(path)
        if cal.n_leds != header.n_leds:
            raise FPMInputError(f"calibration is for {cal.n_leds} LEDs, the raw data have {header.n_leds}", path)
        check_data(cal, lambda: data_fingerprint(header.n_leds, source.frame_shape, source.read_frames), path,
                   force=getattr(args, "force_calibration", False))
        return cal.replace(report=dict(cal.report, file=str(path)))
    if not getattr(args, "calibrate", False):
        return None
    H, W = source.frame_shape
    side = min(H, W, args.calib_crop) if args.calib_crop else None
    top, left = ((H - side) // 2, (W - side) // 2) if side else (0, 0)
    raw = source.tile_raw(top, left, side or H, side or W)
    cal = _fit(args, raw, getattr(args, "quiet", False))
    print(calibration_text(cal, raw), file=sys.stderr)
    return cal


def run_tiled(args, raw_path: Path, out: Path) -> int:
    """``fpminr reconstruct --tile``: tiles on dask, then the output assembled from the tile files."""
    from ..tiles.run import default_workers, iter_tiles

    job = build_job(args, raw_path, out)
    lay = job.layout
    where = args.scheduler or (f"{args.workers} local worker processes" if args.workers else "this process")
    print(f"tiles: {lay.grid_shape[0]} x {lay.grid_shape[1]} tiles of {lay.tile_shape[0]} raw px (overlap "
          f"{lay.overlap}) over {lay.frame_shape[0]} x {lay.frame_shape[1]} px, {job.method}, "
          f"{'per-tile NAs' if job.leds is not None else 'centre NAs'}, {job.source.kind} reading, on {where}",
          file=sys.stderr)
    _check_limits(job, out, concurrent=args.workers or default_workers())
    bar = ProgressLine("tiles", enabled=not args.quiet)
    event = None
    for event in iter_tiles(job, scheduler=args.scheduler, workers=args.workers,
                            processes=bool(args.workers) and not args.scheduler, dashboard=args.dashboard,
                            scheduler_timeout_s=args.scheduler_timeout):
        bar.update(event.fraction, event.text())
    bar.close(event.text() if event is not None else "")
    assert event is not None and event.done
    if event.skipped:
        print(f"tiles: {event.skipped} of {event.n_tiles} kept from an earlier run", file=sys.stderr)
    _write_output(job, event.markers, out, quiet=args.quiet)
    if not args.keep_tiles:
        shutil.rmtree(job.work_dir, ignore_errors=True)
    return 0


def _check_limits(job, out: Path, concurrent: int = 1) -> None:
    """Refuse, before the first tile, a run beyond ``--max-memory`` or an output beyond ``--max-output``.

    Memory: ``concurrent`` tiles at once (fpm stack or inr training of a tile's window) and the
    assembly (the whole field for ``.npz``/``.tif``, one block per plane for ``.zarr``). Output: the
    assembled stack (a ``.zarr`` pyramid adds a third) plus the tile files kept meanwhile.
    """
    from ..io import budget
    from ..tiles.assemble import BLOCK

    lay, optics = job.layout, job.source.header.optics
    n_leds, planes = job.source.header.n_leds, job.planes.size
    th, tw = lay.tile_shape
    hr_tile = (th * optics.upsample, tw * optics.upsample)
    if job.method == "fpm":
        per_tile = budget.fpm_bytes(n_leds, (th, tw), hr_tile, planes)
    else:
        per_tile = budget.inr_training_bytes(n_leds, (th, tw), hr_tile)
    suffix = out.suffix.lower()
    H, W = lay.hr_shape
    region = (min(H, BLOCK), min(W, BLOCK)) if suffix == ".zarr" else (H, W)
    assemble = 0 if suffix == ".fpminr" else budget.render_bytes(region, planes, 2)
    memory = max(per_tile * max(1, concurrent), assemble)
    budget.check_memory(memory, f"a tiled run of {lay.n_tiles} tiles ({planes} planes)", out,
                        hint="use fewer planes, a smaller --tile or fewer --workers")
    tiles = lay.n_tiles * budget.stack_bytes(planes, hr_tile, 2) if job.method == "fpm" else 0
    pyramid = 4 / 3 if suffix == ".zarr" else 1.0  # the levels of a .zarr add up to a third more
    whole = 0 if suffix == ".fpminr" else int(budget.stack_bytes(planes, (H, W), 2) * pyramid)
    budget.check_output(whole + tiles, f"{planes} planes of {H}x{W} px from {lay.n_tiles} tiles", out,
                        hint="use fewer planes (--z-step) or a model (.fpminr), which renders any plane later")


def _write_output(job, markers: dict, out: Path, quiet: bool = False) -> None:
    from ..io.mosaic_file import load_mosaic, save_mosaic
    from ..tiles.assemble import stack_region, write_ome_zarr, write_whole

    lay = job.layout
    optics = job.source.header.optics
    suffix = out.suffix.lower()
    planes = job.planes
    if job.method == "fpm":
        def source(region):
            return stack_region(lay, markers, job.work_dir, region, planes.size)
    else:
        mosaic_path = out if suffix == ".fpminr" else job.work_dir / "mosaic.fpminr"
        save_mosaic(mosaic_path, lay, list(markers.values()), job.work_dir, optics,
                    (float(planes.min()), float(planes.max())),
                    meta={"source": str(job.source.header.source), "job_hash": job.job_hash,
                          "per_tile_na": job.leds is not None})
        if suffix == ".fpminr":
            print(f"mosaic     {out}  ({lay.n_tiles} tiles)")
            return
        mosaic = load_mosaic(mosaic_path)

        def source(region):
            return mosaic.render(planes, region)
    if suffix == ".zarr":
        bar = ProgressLine("write", enabled=not quiet)
        rows, cols = lay.grid_shape
        focus = [[markers[(r, c)].get("best_focus_um") for c in range(cols)] for r in range(rows)]
        write_ome_zarr(out, source, lay, planes, optics.dx_hr_um,
                       progress=lambda i, n: bar.update(i / n, f"blocks {i}/{n}"),
                       attrs={"tile_best_focus_um": focus})
        bar.close()
    else:
        write_whole(out, source, lay, planes, optics.dx_hr_um)
    print(f"stack      {out}  ({planes.size} planes, {lay.n_tiles} tiles)")


def render_mosaic(args, path: Path, out: Path) -> int:
    """``fpminr render MOSAIC --region TOP LEFT H W --level L``: blended planes of a region."""
    import numpy as np

    from ..io.mosaic_file import load_mosaic
    from ..io.stack_files import StackArrays, write_stack
    from .common import _requested_planes

    mosaic = load_mosaic(path)
    planes = _requested_planes(args, (mosaic.z_min_um, mosaic.z_max_um))
    outside = planes[(planes < mosaic.z_min_um - 1e-6) | (planes > mosaic.z_max_um + 1e-6)]
    if outside.size:
        raise FPMInputError(f"z = {outside[0]:g} um is outside the mosaic's range "
                            f"[{mosaic.z_min_um:g}, {mosaic.z_max_um:g}] um", path)
    H, W = mosaic.hr_shape
    region = tuple(args.region) if args.region else (0, 0, H, W)
    level = int(args.level or 0)
    if level < 0 or level > 10:
        raise FPMInputError(f"--level must be from 0 to 10, got {level}")
    top, left, h, w = region
    if top < 0 or left < 0 or h < 1 or w < 1 or top + h > H or left + w > W:
        raise FPMInputError(f"--region {top} {left} {h} {w} is not inside the mosaic's {H}x{W} hr px", path)
    step = 2 ** level
    if args.all_in_focus:
        return _mosaic_all_in_focus(args, mosaic, planes, region, out)
    # level L: the napari layer's level, each pixel the area average of its 2^L x 2^L hr block
    # (blocks on the frame's grid; the region widened to whole blocks)
    y0, x0 = top // step, left // step
    lh, lw = -(-(top + h) // step) - y0, -(-(left + w) // step) - x0
    _check_render_limits(args, out, planes.size, (lh, lw))
    if level == 0:
        amp, phase = mosaic.render(planes, region)
    else:
        from ..tiles.pyramid import MosaicPyramid

        pyramid = MosaicPyramid(mosaic)
        amp, phase = (np.stack([pyramid.region(float(z), step, (y0, x0, lh, lw), part) for z in planes])
                      for part in ("amplitude", "phase"))
    write_stack(out, StackArrays(amp, phase if args.phase else None, planes, mosaic.dx_hr_um * step))
    print(f"stack      {out}  ({planes.size} planes, region {h}x{w} hr px at level {level}: {lh}x{lw} px"
          + (f" from level px ({y0}, {x0})" if level else "") + ")")
    return 0


def _mosaic_all_in_focus(args, mosaic, planes, region, out: Path) -> int:
    """``render MOSAIC --all-in-focus``: per tile, blended (tiles/focus.py); full resolution only."""
    import numpy as np

    from ..io.stack_files import StackArrays, write_stack
    from ..tiles.focus import mosaic_all_in_focus

    if args.level:
        raise FPMInputError("--all-in-focus renders at full resolution: leave out --level")
    if args.raw or args.focus_measure == "data":
        raise FPMInputError("--focus-measure data / --raw are for single models; a mosaic's tiles use the "
                            "complex-field edges (auto) or nv", Path(args.raw or out))
    _check_render_limits(args, out, 1, tuple(region[2:]))
    bar = ProgressLine("all-in-focus", enabled=not args.quiet)
    fused, depth = mosaic_all_in_focus(mosaic, planes, region, patch=args.patch, stride=args.stride,
                                       measure=args.focus_measure,
                                       progress=lambda i, n: bar.update(i / n, f"{i}/{n} tiles"))
    bar.close()
    has = np.isfinite(depth)
    z_repr = float(np.median(depth[has])) if has.any() else float(np.median(planes))
    write_stack(out, StackArrays(fused[None], None, np.array([z_repr]), mosaic.dx_hr_um, depth_um=depth))
    span = (f"depth {np.min(depth[has]):.2f}..{np.max(depth[has]):.2f} um on {100 * has.mean():.0f}% of the field"
            if has.any() else "no structure found")
    print(f"all-in-focus {out}  ({span})")
    return 0


def _check_render_limits(args, out: Path, n_planes: int, shape) -> None:
    """Refuse, before any tile is decoded, a mosaic render beyond ``--max-memory`` / ``--max-output``."""
    from ..io import budget
    from .common import _check_output_size

    memory = budget.render_bytes(shape, n_planes, 2)  # amplitude and phase are rendered together
    budget.check_memory(memory, f"rendering {n_planes} planes of {shape[0]}x{shape[1]} px", out,
                        hint="use fewer planes (--z-step), a --region or a higher --level")
    _check_output_size(out, n_planes, shape, 2 if args.phase else 1, memory)


def add_region_options(p) -> None:
    p.add_argument("--region", type=int, nargs=4, metavar=("TOP", "LEFT", "HEIGHT", "WIDTH"),
                   help="mosaics: an hr-pixel region of the field (default: all of it)")
    p.add_argument("--level", type=int, default=0,
                   help="mosaics: pyramid level L (each pixel the area average of 2**L x 2**L hr px, as in napari)")
