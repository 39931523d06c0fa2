"""Benchmark: whole slides in tiles (issue 12), measured in one run on the simulated ``slide``.

The ``slide`` preset (NA 0.15, 4×, 3.45 µm pixels, 69 LEDs of a 2 mm pitch board 30 mm below,
exact spherical-wave illumination per pixel, a tilted and slightly curved slide) is simulated at
512² and 1024² raw px and written as native TIFF stacks (cached in ``--cache``). Then:

* **fpm, tiles** (``fpminr reconstruct --tile 128 --overlap 16 --method fpm``, 5 planes over the
  slide's depth range, in a child process: wall time and peak RSS of that process) at 512² and
  1024²; the time ratio 1024²/512².
* **quality**: the amplitude at the true depth (for every pixel the plane nearest the slide's
  depth there) against the band-limited truth (``psnr_scaled``, scale fitted); within 8 raw px of
  the seams (the centres of the overlaps between tiles) vs the rest (tile interiors); the field's
  centre vs its four corners (128 raw px squares); the single-piece reconstruction of the 512²
  field (one piece, the centre's NAs) for comparison.
* **local angles**: the tiles on the 1024² field's edge reconstructed again with the centre's NAs
  (``--centre-na``): PSNR per tile with per-tile NAs vs centre NAs.
* **throughput**: tiles per minute per worker, and the projected time of a 2048² × 225-LED frame
  (361 tiles of 128, cost per tile ∝ LEDs) on this machine and with more workers.
* **inr, tiles**: a mosaic model of the 512² field (``--method inr``), time and peak RSS.
* **decode latency**: a 2048² raw (4096² hr) mosaic whose tiles reuse the 512² run's tile models
  (decoding costs the same whatever the weights), viewed through the napari layer's dask pyramid:
  a 1920×1080 view at full resolution and the whole field zoomed out to fit, cold caches.

Run:  .venv/bin/python benchmarks/bench_tiles.py [--sizes 512 1024] [--inr-size 512 1024] [--skip-inr] [--cache DIR]
      [--iterations N (fpm passes per plane; default 25, the CLI's)]
Results: printed, and written as JSON to ``--out`` (default ``bench_tiles.json`` in the cache).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TILE, OVERLAP, N_PLANES = 128, 16, 5
ITERATIONS = [25]  # set by --iterations
SEAM_PX = 8


def simulate_cached(size: int, cache: Path) -> Path:
    from napari_fpminr.io import write_raw
    from napari_fpminr.simulate import simulate

    path = cache / f"slide_{size}.tif"
    truth = path.with_suffix(".truth.npz")
    if path.exists() and truth.exists() and "phase" in np.load(truth).files:
        return path
    t0 = time.perf_counter()
    sim = simulate("slide", size=size, seed=0, device="cpu")
    write_raw(sim.raw, path)
    np.savez(path.with_suffix(".truth.npz"), amplitude=sim.truth.amplitude[0], phase=sim.truth.phase[0],
             meta=json.dumps(sim.truth.meta), dx_hr_um=sim.truth.dx_hr_um)
    print(f"simulated slide {size}^2 in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def true_depth(truth_meta: dict, n_hr: int, dx_hr_um: float) -> np.ndarray:
    """The slide's depth (µm) at every hr pixel of the kept field (same formula as the simulation)."""
    from napari_fpminr.optics.slide import depth_map

    c = (np.arange(n_hr) - (n_hr - 1) / 2) * dx_hr_um / 1000.0
    return depth_map(c[:, None], c[None, :], tilt_um_per_mm=truth_meta["tilt_um_per_mm"],
                     curvature_um_per_mm2=truth_meta["curvature_um_per_mm2"], z_centre_um=truth_meta["z_centre_um"])


def planes_for(truth_meta: dict) -> np.ndarray:
    lo, hi = truth_meta["depth_range_um"]
    return np.linspace(lo, hi, N_PLANES)


def at_depth(amplitude: np.ndarray, planes: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Per pixel, the plane nearest the true depth."""
    idx = np.abs(depth[None] - planes[:, None, None]).argmin(axis=0)
    return np.take_along_axis(amplitude, idx[None], axis=0)[0]


def run_child(argv: list[str]) -> dict:
    """Run ``fpminr ARGV`` in a child process: wall time and the child's peak RSS.

    Peak RSS is the child's ``VmHWM`` (its own address space's high-water mark). Not
    ``getrusage().ru_maxrss``: Linux carries the forking parent's peak over ``exec`` into it, so a
    child of a large benchmark process would report the parent's memory.
    """
    code = ("import sys, time; from napari_fpminr.cli import main; t = time.perf_counter(); "
            "rc = main(sys.argv[1:]); w = time.perf_counter() - t; "
            "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
            "print('BENCH', rc, w, hwm)")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH")]
    if proc.returncode != 0 or not line:
        raise RuntimeError(f"fpminr {' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    _, rc, wall, rss_kb = line[-1].split()
    return {"wall_s": float(wall), "peak_rss_gb": int(rss_kb) / 2**20}


def seam_mask(layout, hr_shape) -> np.ndarray:
    rows, cols = layout.seam_lines_hr()
    up = layout.upsample
    yy = np.arange(hr_shape[0])[:, None] + 0.5
    xx = np.arange(hr_shape[1])[None, :] + 0.5
    near = np.zeros(hr_shape, bool)
    for s in rows:
        near |= np.abs(yy - s) <= SEAM_PX * up
    for s in cols:
        near |= np.abs(xx - s) <= SEAM_PX * up
    return near


def quality(amp_at_depth: np.ndarray, truth: np.ndarray, layout) -> dict:
    from napari_fpminr.recon.metrics import psnr_scaled

    H, W = truth.shape
    near = seam_mask(layout, (H, W))
    up = layout.upsample
    q = 128 * up
    corners = [(0, 0), (0, W - q), (H - q, 0), (H - q, W - q)]
    out = {"seams_db": psnr_scaled(amp_at_depth, truth, near) if near.any() else None,
           "interior_db": psnr_scaled(amp_at_depth, truth, ~near),
           "centre_db": psnr_scaled(amp_at_depth[H // 2 - q // 2:H // 2 + q // 2, W // 2 - q // 2:W // 2 + q // 2],
                                    truth[H // 2 - q // 2:H // 2 + q // 2, W // 2 - q // 2:W // 2 + q // 2]),
           "corners_db": [psnr_scaled(amp_at_depth[t:t + q, l:l + q], truth[t:t + q, l:l + q]) for t, l in corners]}
    return out


def bench_fpm(size: int, cache: Path, results: dict) -> None:
    from napari_fpminr.tile_layout import TileLayout

    raw = simulate_cached(size, cache)
    t = np.load(raw.with_suffix(".truth.npz"))
    meta = json.loads(str(t["meta"]))
    planes = planes_for(meta)
    out = cache / f"fpm_{size}.npz"
    m = run_child(["reconstruct", str(raw), "-o", str(out), "--method", "fpm", "--tile", str(TILE), "--overlap",
                   str(OVERLAP), "--z", *[f"{z:.4f}" for z in planes], "-q", "--device", "cpu", "--keep-tiles",
                   "--iterations", str(ITERATIONS[0])])
    amp = np.load(out)["amplitude"]
    truth = t["amplitude"]
    layout = TileLayout((size, size), TILE, OVERLAP, amp.shape[1] // size, 1.0)  # dx unused here
    depth = true_depth(meta, truth.shape[0], float(t["dx_hr_um"]))
    r = {"tiles": layout.n_tiles, "planes": planes.tolist(), **m, **quality(at_depth(amp, planes, depth), truth, layout)}
    r["tiles_per_min_per_worker"] = layout.n_tiles / (m["wall_s"] / 60.0)
    results[f"fpm_tiles_{size}"] = r
    print(f"fpm tiles {size}^2: {json.dumps(r)}", flush=True)


def bench_single_piece(size: int, cache: Path, results: dict) -> None:
    from napari_fpminr.tile_layout import TileLayout

    raw = simulate_cached(size, cache)
    t = np.load(raw.with_suffix(".truth.npz"))
    meta = json.loads(str(t["meta"]))
    planes = planes_for(meta)
    out = cache / f"fpm_single_{size}.npz"
    m = run_child(["reconstruct", str(raw), "-o", str(out), "--method", "fpm", "--z", *[f"{z:.4f}" for z in planes],
                   "-q", "--device", "cpu", "--iterations", str(ITERATIONS[0])])
    amp = np.load(out)["amplitude"]
    truth = t["amplitude"]
    layout = TileLayout((size, size), TILE, OVERLAP, amp.shape[1] // size, 1.0)
    depth = true_depth(meta, truth.shape[0], float(t["dx_hr_um"]))
    r = {**m, **quality(at_depth(amp, planes, depth), truth, layout)}
    results[f"fpm_single_piece_{size}"] = r
    print(f"fpm single piece {size}^2: {json.dumps(r)}", flush=True)


def edge_tiles(layout, n: int = 8) -> list:
    """``n`` tiles spread along the field's edge (raster order, evenly strided)."""
    r_, c_ = layout.grid_shape
    edge = [tl for tl in layout.tiles() if tl.row in (0, r_ - 1) or tl.col in (0, c_ - 1)]
    return edge[:: max(1, len(edge) // n)][:n]


def psnr_complex(estimate: np.ndarray, truth: np.ndarray) -> float:
    """PSNR (dB) of ``c·estimate`` against the complex ``truth``, ``c`` the least-squares complex scale
    (a reconstruction's global phase and brightness are free)."""
    e, t = estimate.astype(np.complex128).ravel(), truth.astype(np.complex128).ravel()
    c = np.vdot(e, t) / max(np.vdot(e, e).real, 1e-30)
    return float(10 * np.log10(np.abs(t).max() ** 2 / np.mean(np.abs(c * e - t) ** 2)))


def bench_local_angles(size: int, cache: Path, results: dict) -> None:
    """Edge tiles of the tiled run again with the centre's NAs; PSNR per tile, both ways.

    Two scores per tile, over the tile less its outer 8 px, at the plane nearest the true depth:
    the amplitude, and the complex field against the sample's (:func:`psnr_complex`, global phase
    and brightness fitted).
    """
    from safetensors.numpy import load_file

    from napari_fpminr.recon.metrics import psnr_scaled
    from napari_fpminr.tile_layout import TileLayout
    from napari_fpminr.tiles.run import TiledJob
    from napari_fpminr.tiles.source import open_source
    from napari_fpminr.tiles.worker import run_tile

    raw = cache / f"slide_{size}.tif"
    t = np.load(raw.with_suffix(".truth.npz"))
    meta = json.loads(str(t["meta"]))
    planes = planes_for(meta)
    src = open_source(raw)
    o = src.header.optics
    layout = TileLayout(src.frame_shape, TILE, OVERLAP, o.upsample, o.dx_lr_um)
    local_dir = cache / f"fpm_{size}.npz.tiles"
    depth = true_depth(meta, t["amplitude"].shape[0], float(t["dx_hr_um"]))
    field_truth = t["amplitude"] * np.exp(1j * t["phase"])
    job = TiledJob(src, layout, "fpm", planes, cache / f"centre_na_{size}.tiles", leds=None,
                   options={"iterations": ITERATIONS[0], "mode": "batched", "recover_pupil": False, "device": "cpu"})
    job.work_dir.mkdir(parents=True, exist_ok=True)
    pick = edge_tiles(layout)
    rows = []
    for tile in pick:
        run_tile(job.task(tile))
        T, L, h, w = layout.hr_window(tile)
        tr, dep = t["amplitude"][T:T + h, L:L + w], depth[T:T + h, L:L + w]
        m = 8 * o.upsample  # leave the tile's own border out: it is blended away in the mosaic
        inner = (slice(m, h - m), slice(m, w - m))
        ft = field_truth[T:T + h, L:L + w][inner]
        amp_db, field_db = [], []
        for folder in (local_dir, job.work_dir):
            arrays = load_file(str(folder / f"{tile.name}.safetensors"))
            a, p = at_depth(arrays["amplitude"], planes, dep), at_depth(arrays["phase"], planes, dep)
            amp_db.append(psnr_scaled(a[inner], tr[inner]))
            field_db.append(psnr_complex((a * np.exp(1j * p))[inner], ft))
        rows.append({"tile": [tile.row, tile.col], "centre_mm": layout.centre_mm(tile),
                     "local_na_db": amp_db[0], "centre_na_db": amp_db[1],
                     "local_na_field_db": field_db[0], "centre_na_field_db": field_db[1]})
    gain = [r["local_na_db"] - r["centre_na_db"] for r in rows]
    field_gain = [r["local_na_field_db"] - r["centre_na_field_db"] for r in rows]
    results[f"local_angles_{size}"] = {"tiles": rows, "mean_gain_db": float(np.mean(gain)),
                                       "min_gain_db": float(np.min(gain)),
                                       "mean_field_gain_db": float(np.mean(field_gain)),
                                       "min_field_gain_db": float(np.min(field_gain))}
    print(f"local angles {size}^2: {json.dumps(results[f'local_angles_{size}'])}", flush=True)


def bench_local_angles_same_leds(size: int, cache: Path, results: dict) -> None:
    """The edge tiles once more, one plane at each tile's mean depth, per-tile vs centre NAs with the
    *same* LEDs (the tile's own pupil-edge LEDs left out in both): the NAs alone, without the
    choice of LEDs that the NAs also drive in a tiled run. Adaptive step, as tiles use."""
    from napari_fpminr.recon.conventional import reconstruct_stack
    from napari_fpminr.recon.metrics import psnr_scaled
    from napari_fpminr.tile_layout import TileLayout
    from napari_fpminr.tiles.run import TiledJob
    from napari_fpminr.tiles.source import open_source

    raw_path = cache / f"slide_{size}.tif"
    t = np.load(raw_path.with_suffix(".truth.npz"))
    meta = json.loads(str(t["meta"]))
    src = open_source(raw_path)
    o = src.header.optics
    layout = TileLayout(src.frame_shape, TILE, OVERLAP, o.upsample, o.dx_lr_um)
    depth = true_depth(meta, t["amplitude"].shape[0], float(t["dx_hr_um"]))
    job = TiledJob(src, layout, "fpm", [0.0], cache / "unused.tiles", leds=src.header.leds)
    pick = edge_tiles(layout)
    rows = []
    for tile in pick:
        T, L, h, w = layout.hr_window(tile)
        z = float(depth[T:T + h, L:L + w].mean())
        keep = job.kept_leds(tile)
        raw = src.tile_raw(*tile.window)
        m = 8 * o.upsample
        truth = t["amplitude"][T:T + h, L:L + w][m:-m, m:-m]
        scores = []
        for na in (job.tile_na(tile), o.na_illum):
            r = raw.with_optics(na_illum=na, pupil=None)
            r = r if keep is None else r.select_leds(keep)
            a = reconstruct_stack(r, [z], iterations=ITERATIONS[0], device="cpu", adaptive_step=True).amplitude[0]
            scores.append(psnr_scaled(a[m:-m, m:-m], truth))
        rows.append({"tile": [tile.row, tile.col], "z_um": z, "local_na_db": scores[0], "centre_na_db": scores[1]})
    gain = [r["local_na_db"] - r["centre_na_db"] for r in rows]
    results[f"local_angles_same_leds_{size}"] = {"tiles": rows, "mean_gain_db": float(np.mean(gain)),
                                                 "min_gain_db": float(np.min(gain))}
    print(f"local angles, same LEDs {size}^2: {json.dumps(results[f'local_angles_same_leds_{size}'])}", flush=True)


def bench_inr(size: int, cache: Path, results: dict) -> None:
    raw = simulate_cached(size, cache)
    t = np.load(raw.with_suffix(".truth.npz"))
    meta = json.loads(str(t["meta"]))
    lo, hi = meta["depth_range_um"]
    out = cache / f"inr_{size}.fpminr"
    m = run_child(["reconstruct", str(raw), "-o", str(out), "--method", "inr", "--tile", str(TILE), "--overlap",
                   str(OVERLAP), "--z-min", f"{lo - 2:.3f}", "--z-max", f"{hi + 2:.3f}", "-q", "--device", "cpu",
                   "--keep-tiles"])
    from napari_fpminr.io.mosaic_file import load_mosaic
    from napari_fpminr.tile_layout import TileLayout

    mosaic = load_mosaic(out)
    planes = np.linspace(lo, hi, 4 * N_PLANES + 1)  # a model decodes any z: judge it nearer the true depth
    (amp,) = mosaic.render(planes, parts=("amplitude",))
    layout = mosaic.layout
    depth = true_depth(meta, t["amplitude"].shape[0], float(t["dx_hr_um"]))
    q = quality(at_depth(amp, planes, depth), t["amplitude"], layout)
    r = {"tiles": layout.n_tiles, **m, "file_mb": out.stat().st_size / 2**20, **q,
         "tiles_per_min_per_worker": layout.n_tiles / (m["wall_s"] / 60.0)}
    results[f"inr_tiles_{size}"] = r
    print(f"inr tiles {size}^2: {json.dumps(r)}", flush=True)
    _ = TileLayout


def bench_decode(cache: Path, results: dict, source_size: int = 512, frame: int = 2048) -> None:
    from napari_fpminr._napari._mosaic import MosaicLevels
    from napari_fpminr.io.mosaic_file import load_mosaic, save_mosaic
    from napari_fpminr.tile_layout import TileLayout

    small = load_mosaic(cache / f"inr_{source_size}.fpminr")
    work = cache / f"inr_{source_size}.fpminr.tiles"
    src_markers = [json.loads(p.read_text()) for p in sorted(work.glob("tile_*.json"))]
    lay0 = small.layout
    layout = TileLayout((frame, frame), lay0.tile, lay0.overlap, lay0.upsample, lay0.dx_lr_um)
    markers = [dict(src_markers[(tl.row * 7 + tl.col) % len(src_markers)], row=tl.row, col=tl.col,
                    window=list(tl.window)) for tl in layout.tiles()]
    big = cache / f"decode_{frame}.fpminr"
    from napari_fpminr.optics.system import Optics

    save_mosaic(big, layout, markers, work, Optics.from_dict(small.head["optics"]), (small.z_min_um, small.z_max_um))
    z = np.array([0.0])
    out = {}
    mosaic = load_mosaic(big)
    lv = MosaicLevels(mosaic, z, "amplitude")
    levels = lv.levels()
    H, W = mosaic.hr_shape
    t0 = time.perf_counter()
    view = np.asarray(levels[0][0, H // 2 - 540:H // 2 + 540, W // 2 - 960:W // 2 + 960])
    out["full_resolution_1920x1080_s"] = time.perf_counter() - t0
    out["full_resolution_chunks"] = lv.decoded_chunks
    t0 = time.perf_counter()
    np.asarray(levels[0][0, H // 2 - 540:H // 2 + 540, W // 2 - 960:W // 2 + 960])
    out["full_resolution_cached_s"] = time.perf_counter() - t0
    fit = next(i for i, s in enumerate(lv.steps) if H // s <= 1080 and W // s <= 1920)
    mosaic = load_mosaic(big)
    lv = MosaicLevels(mosaic, z, "amplitude")
    t0 = time.perf_counter()
    overview = np.asarray(lv.levels()[fit][0])
    out["zoomed_out_s"] = time.perf_counter() - t0
    out["zoomed_out_level"] = fit
    out["zoomed_out_shape"] = list(overview.shape)
    out["frame_hr"] = [H, W]
    out["tiles"] = layout.n_tiles
    results["decode_latency"] = out
    print(f"decode latency: {json.dumps(out)} ({view.shape})", flush=True)


def projection(results: dict) -> None:
    """2048² × 225 LEDs: 361 tiles of 128 px; time per tile scaled by the LED count (69 -> 225)."""
    r = results.get("fpm_tiles_1024") or results.get("fpm_tiles_512")
    if not r:
        return
    from napari_fpminr.tile_layout import axis_starts

    n = len(axis_starts(2048, TILE, OVERLAP)) ** 2
    per_tile = 60.0 / r["tiles_per_min_per_worker"] * 225 / 69
    results["projection_2048_225"] = {"tiles": n, "s_per_tile": per_tile, "one_worker_min": n * per_tile / 60,
                                      "per_worker_min": {k: n * per_tile / 60 / k for k in (1, 2, 4, 8)}}
    print(f"projection 2048^2 x 225 LEDs (fpm, {N_PLANES} planes): {json.dumps(results['projection_2048_225'])}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--cache", default="bench_tiles_cache")
    ap.add_argument("--out")
    ap.add_argument("--skip-inr", action="store_true")
    ap.add_argument("--inr-size", type=int, nargs="+",
                    help="raw sizes of the INR mosaic runs (default: the smallest size)")
    ap.add_argument("--iterations", type=int, default=25, help="fpm iterations per plane")
    ap.add_argument("--only", nargs="+", help="stages: fpm single local inr decode")
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else cache / "bench_tiles.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    stages = set(args.only or ["fpm", "single", "local", "inr", "decode"])
    ITERATIONS[0] = args.iterations
    results["fpm_iterations"] = args.iterations

    def save():
        out.write_text(json.dumps(results, indent=1))

    if "fpm" in stages:
        for size in args.sizes:
            bench_fpm(size, cache, results)
            save()
    if "fpm_tiles_512" in results and "fpm_tiles_1024" in results:
        results["time_ratio_1024_over_512"] = results["fpm_tiles_1024"]["wall_s"] / results["fpm_tiles_512"]["wall_s"]
    if "single" in stages and 512 in args.sizes:
        bench_single_piece(512, cache, results)
        save()
    if "local" in stages:
        bench_local_angles(max(args.sizes), cache, results)
        bench_local_angles_same_leds(max(args.sizes), cache, results)
        save()
    projection(results)
    save()
    inr_sizes = args.inr_size or [min(args.sizes)]
    inr_size = min(inr_sizes)
    if "inr" in stages and not args.skip_inr:
        for size in inr_sizes:
            bench_inr(size, cache, results)
            save()
        if "inr_tiles_512" in results and "inr_tiles_1024" in results:
            results["inr_time_ratio_1024_over_512"] = (results["inr_tiles_1024"]["wall_s"]
                                                       / results["inr_tiles_512"]["wall_s"])
            save()
    if "decode" in stages and (cache / f"inr_{inr_size}.fpminr").exists():
        bench_decode(cache, results, source_size=inr_size)
        save()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
