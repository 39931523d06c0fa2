"""Benchmark: field-dependent illumination (issue 12) and the cost of sub-bin LED tilts.

1. A flat whole-slide field (``simulate(preset="slide")`` with no tilt or curvature, z = 0) of
   ``--size`` raw pixels, simulated with exact spherical waves from LEDs 30 mm away (NA 0.15, 4×,
   3.45 µm pixels, 2 mm pitch, 69 LEDs). Reconstructed as one piece with the field centre's
   illumination NAs (conventional qNewton, ``--iterations`` passes, z = 0), once with sub-bin
   tilts and once snapped. Amplitude PSNR (scale fitted, against the band-limited truth) in a
   ``--region``² raw window at the centre and at each corner (``--inset`` raw pixels from the edges).
2. The same windows reconstructed from crops (window plus ``--pad`` raw pixels where the field
   allows) with the NAs that the crop's centre sees (``LEDArray.na_at``), and from the real tiled
   runner (``napari_fpminr.tiles``: tiles of ``--tile`` with ``--overlap``, blended): with per-tile
   NAs (pupil-edge LEDs left out, the default), with every LED, and with the centre's NAs.
3. Solver cost: conventional reconstruction of ``--timing-size``² paper-optics data (all LEDs
   off the bin grid) at ``--timing-planes`` planes, sub-bin vs snapped, interleaved repeats in
   this process; the median ratio is the figure.
   ``--distance-mm 3000`` moves the board 100× further (pitch scaled: same centre NAs, nearly
   plane waves): what remains at the corners is the one-piece reconstruction's own edge effect.
4. With ``--slide-size N``: time and peak RSS of ``simulate(preset="slide", size=N)`` (default
   tilt and curvature) in a child process.

Run:  .venv/bin/python benchmarks/bench_field_illumination.py [--size 512] [--slide-size 1024]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import time

import numpy as np


def _windows(size: int, region: int, inset: int) -> dict[str, tuple[int, int]]:
    lo, hi, mid = inset, size - inset - region, (size - region) // 2
    return {"centre": (mid, mid), "top-left": (lo, lo), "top-right": (lo, hi), "bottom-left": (hi, lo),
            "bottom-right": (hi, hi)}


def _psnr(amplitude, truth, top, left, region, up) -> float:
    from napari_fpminr.recon.metrics import psnr_scaled

    sl = (slice(top * up, (top + region) * up), slice(left * up, (left + region) * up))
    return psnr_scaled(amplitude[sl], truth[sl])


def field_illumination(args) -> None:
    from napari_fpminr.simulate import simulate
    from napari_fpminr.recon.conventional import reconstruct_stack

    from napari_fpminr.optics.slide import slide_optics

    t0 = time.perf_counter()
    scale = args.distance_mm / 30.0  # same NAs at the field centre, flatter waves when > 1
    optics, leds = slide_optics(distance_mm=args.distance_mm, pitch_mm=2.0 * scale)
    sim = simulate("slide", size=args.size, seed=args.seed, device="cpu", optics=optics, leds=leds,
                   tilt_um_per_mm=(0.0, 0.0), curvature_um_per_mm2=0.0, **({"margin_px": args.margin}
                                                                          if args.margin else {}))
    print(f"simulated {args.size}² raw x {sim.raw.n_leds} LEDs with spherical waves from "
          f"{args.distance_mm:g} mm in "
          f"{time.perf_counter() - t0:.1f} s")
    raw, truth = sim.raw, sim.truth.amplitude[0]
    up = raw.optics.upsample
    wins = _windows(args.size, args.region, args.inset)
    half_mm = (args.size - 1) / 2 * raw.optics.dx_lr_um / 1000
    print(f"field half-width {half_mm:.3f} mm; corner NA shift vs centre up to "
          f"{np.abs(raw.leds.na_at((half_mm, half_mm)) - raw.leds.na_at()).max():.4f}")
    rows = {}
    for subpixel in (True, False):
        t = time.perf_counter()
        stack = reconstruct_stack(raw, [0.0], iterations=args.iterations, device="cpu", subpixel=subpixel)
        label = "one piece, sub-bin" if subpixel else "one piece, snapped"
        rows[label] = ({k: _psnr(stack.amplitude[0], truth, *v, args.region, up) for k, v in wins.items()},
                       time.perf_counter() - t)
    crop = args.region + 2 * args.pad
    local = {}
    wins_local = {} if args.no_crops else wins
    t = time.perf_counter()
    for name, (top, left) in wins_local.items():
        ct = int(np.clip(top - args.pad, 0, args.size - crop))
        cl = int(np.clip(left - args.pad, 0, args.size - crop))
        centre_mm = ((cl + (crop - 1) / 2 - (args.size - 1) / 2) * raw.optics.dx_lr_um / 1000,
                     (ct + (crop - 1) / 2 - (args.size - 1) / 2) * raw.optics.dx_lr_um / 1000)
        part = raw.crop(ct, cl, crop, crop)
        part = _with_optics(part, raw.leds.na_at(centre_mm))
        st = reconstruct_stack(part, [0.0], iterations=args.iterations, device="cpu")
        amp = np.zeros_like(truth)
        amp[ct * up:(ct + crop) * up, cl * up:(cl + crop) * up] = st.amplitude[0]
        local[name] = _psnr(amp, truth, top, left, args.region, up)
    if local:
        rows["crops, local NAs, sub-bin"] = (local, time.perf_counter() - t)
    if args.tile:
        for label, leds, edge, step in (("tiles, per-tile NAs (default)", raw.leds, "drop", "adaptive"),
                                        ("tiles, per-tile NAs, constant step", raw.leds, "drop", "constant"),
                                        ("tiles, per-tile NAs, every LED", raw.leds, "keep", "adaptive"),
                                        ("tiles, centre NAs", None, "drop", "adaptive")):
            t = time.perf_counter()
            amp = _tiled_amplitude(raw, args, leds, edge, step)
            rows[label] = ({k: _psnr(amp, truth, *v, args.region, up) for k, v in wins.items()},
                           time.perf_counter() - t)
    print(f"\namplitude PSNR (dB) in {args.region}² raw windows ({args.inset} px inset), {args.iterations} passes")
    print(f"| reconstruction | {' | '.join(wins)} | worst corner - centre | time |")
    print("|---|" + "---|" * (len(wins) + 2))
    for label, (psnr, sec) in rows.items():
        worst = min(v for k, v in psnr.items() if k != "centre") - psnr["centre"]
        print(f"| {label} | {' | '.join(f'{psnr[k]:.1f}' for k in wins)} | {worst:+.1f} | {sec:.0f} s |")


def _tiled_amplitude(raw, args, leds, edge_leds: str, step: str) -> np.ndarray:
    """The whole field's amplitude at z = 0 from ``napari_fpminr.tiles`` (in process, blended)."""
    import tempfile

    from napari_fpminr.tile_layout import TileLayout
    from napari_fpminr.tiles.assemble import stack_region
    from napari_fpminr.tiles.run import TiledJob, iter_tiles
    from napari_fpminr.tiles.source import MemorySource

    o = raw.optics
    layout = TileLayout(raw.lr_shape, args.tile, args.overlap, o.upsample, o.dx_lr_um)
    with tempfile.TemporaryDirectory() as work:
        job = TiledJob(MemorySource.from_raw(raw), layout, "fpm", [0.0], work, leds=leds,
                       options={"iterations": args.iterations, "device": "cpu", "edge_leds": edge_leds,
                                "step": step})
        last = None
        for last in iter_tiles(job):
            pass
        H, W = layout.hr_shape
        amp, _ = stack_region(layout, last.markers, work, (0, 0, H, W), 1)
    return amp[0]


def _with_optics(raw, na):
    from dataclasses import replace

    return replace(raw, optics=raw.optics.replace(na_illum=na))


def solver_cost(args) -> None:
    import torch

    from napari_fpminr.optics import FPMForward
    from napari_fpminr.simulate import simulate
    from napari_fpminr.recon.conventional import reconstruct_stack

    sim = simulate("single", size=args.timing_size, seed=args.seed, z_um=0.0)
    assert not FPMForward(sim.raw.optics, sim.raw.lr_shape).on_grid
    z = np.linspace(-10, 10, args.timing_planes)
    times = {True: [], False: []}
    reconstruct_stack(sim.raw, z[:2], iterations=1, device="cpu")  # warm-up
    for _ in range(args.repeats):
        for subpixel in (False, True):
            t = time.perf_counter()
            reconstruct_stack(sim.raw, z, iterations=args.iterations, device="cpu", subpixel=subpixel)
            times[subpixel].append(time.perf_counter() - t)
    snap, sub = np.median(times[False]), np.median(times[True])
    print(f"\nconventional solver, {args.timing_size}² raw, {sim.raw.n_leds} LEDs, {args.timing_planes} planes, "
          f"{args.iterations} passes, {torch.get_num_threads()} threads, median of {args.repeats}: "
          f"snapped {snap:.2f} s, sub-bin {sub:.2f} s, ratio {sub / snap:.2f}")


def _slide_child(size, seed, queue):
    from napari_fpminr.simulate import simulate

    t = time.perf_counter()
    sim = simulate("slide", size=size, seed=seed, device="cpu")
    queue.put((time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
               sim.raw.n_leds, sim.truth.meta["depth_range_um"]))


def slide_cost(args) -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=_slide_child, args=(args.slide_size, args.seed, queue))
    p.start()
    sec, rss_gb, n, depth = queue.get()
    p.join()
    print(f"\nslide preset {args.slide_size}² raw x {n} LEDs (depth {depth[0]:.1f}..{depth[1]:.1f} µm): "
          f"{sec:.0f} s, peak RSS {rss_gb:.2f} GB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--region", type=int, default=128)
    ap.add_argument("--inset", type=int, default=16)
    ap.add_argument("--pad", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timing-size", type=int, default=128)
    ap.add_argument("--timing-planes", type=int, default=11)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--slide-size", type=int, default=0)
    ap.add_argument("--distance-mm", type=float, default=30.0,
                    help="LED board distance; the pitch scales with it (same centre NAs)")
    ap.add_argument("--margin", type=int, default=0, help="slide simulation margin (raw px; 0 = default)")
    ap.add_argument("--no-crops", action="store_true")
    ap.add_argument("--tile", type=int, default=128, help="tiled rows: tile size in raw px (0: no tiled rows)")
    ap.add_argument("--overlap", type=int, default=16)
    ap.add_argument("--skip", nargs="*", default=[], choices=["field", "cost"])
    args = ap.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    if "field" not in args.skip:
        field_illumination(args)
    if "cost" not in args.skip:
        solver_cost(args)
    if args.slide_size:
        slide_cost(args)


if __name__ == "__main__":
    main()
