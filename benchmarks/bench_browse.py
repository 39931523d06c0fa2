"""Browsing a whole slide (issue 21): full-resolution view, zoomed out to fit, z step with prefetch.

Everything is read through the layer data the napari reader hands to napari (``read_one``: the
``LevelArray`` pyramid), never a private path: the mosaic model's layers (:mod:`napari_fpminr._napari._mosaic`)
and, as the baseline, the fpm OME-Zarr of the same slide on local disk (:mod:`._zarr_stack`).
Also, same run: the zoomed-out level decoded from the component fields at every plane (the design
before the node images, ``MosaicPyramid(node_images=False)``) and its PSNR against the node
images; ``--rank-tol 0`` measures with all the terms of the tile models.

Slide: a 2048² raw (4096² hr) frame in 361 tiles of 128 raw px (overlap 16), slide optics (NA 0.15,
4×, 3.45 µm pixels, 2× upsampling), one layer of phase-rich cells (phase up to ``--phase-max`` rad,
a 1024² hr sample repeated 4 × 4: every tile window differs), modelled per tile by a rank-8 low-rank
field (the CLI's default rank) of the sample refocused over −2..2 µm (:mod:`napari_fpminr.tiles.synthetic`;
decoding costs what a trained model's does). Times are medians of ``--repeats`` runs, each at a
depth not decoded before (decoded-image caches cleared between runs; tile models stay loaded).
The OME-Zarr (written by ``tiles.assemble.write_ome_zarr`` from the same mosaic, 9 planes) is
read warm (page cache) and cold (its files dropped from the page cache with ``posix_fadvise``).
"Before" figures: ``MosaicModel.render`` (every level decoded at full resolution, then every
2^L-th pixel kept), the path the layers used before this issue.

    PYTHONPATH=src python benchmarks/bench_browse.py --cache /tmp/bench_browse
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

VIEW = (1080, 1920)


def build(cache: Path, phase_max: float, n_planes: int, rank: int) -> tuple[Path, Path]:
    from napari_fpminr.optics.samples import band_limit, cell_layer
    from napari_fpminr.optics.slide import slide_optics
    from napari_fpminr.tiles.assemble import mosaic_source, write_ome_zarr
    from napari_fpminr.tiles.synthetic import synthetic_mosaic
    from napari_fpminr.io.mosaic_file import load_mosaic

    cache.mkdir(parents=True, exist_ok=True)
    model = cache / f"slide_phase{phase_max:g}_rank{rank}.fpminr"
    zarr_path = cache / f"slide_phase{phase_max:g}_rank{rank}.zarr"
    optics, _ = slide_optics()
    if not model.exists():
        t0 = time.perf_counter()
        rng = np.random.default_rng(1)
        cells = cell_layer((1024, 1024), optics.dx_hr_um, rng, phase_max_rad=phase_max, cells_per_100um2=1.0)
        field = band_limit(np.tile(cells, (4, 4)), optics.dx_hr_um, optics.na_synthetic / optics.wavelength_um)
        synthetic_mosaic(model, field.astype(np.complex64), optics, 128, 16, rank=rank, n_planes=max(9, rank + 1),
                         n_z=17)
        print(f"mosaic built in {time.perf_counter() - t0:.1f} s", flush=True)
    if not zarr_path.exists():
        t0 = time.perf_counter()
        mosaic = load_mosaic(model)
        z = np.linspace(mosaic.z_min_um, mosaic.z_max_um, n_planes)
        write_ome_zarr(zarr_path, mosaic_source(mosaic, z), mosaic.layout, z, mosaic.dx_hr_um)
        print(f"OME-Zarr written in {time.perf_counter() - t0:.1f} s", flush=True)
    return model, zarr_path


def _layers(path: Path):
    from napari_fpminr._napari._reader import read_one

    layers = read_one(str(path))  # what the reader hands to napari (read_paths only adds notifications)
    (amp, meta, _), = [ly for ly in layers if ly[1]["metadata"]["fpminr_kind"] == "amplitude"]
    return amp, meta


def _drop_page_cache(folder: Path) -> None:
    import os

    for f in folder.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def psnr(x: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10(ref.max() ** 2 / np.mean((x.astype(np.float64) - ref) ** 2)))


def pool(a: np.ndarray, s: int) -> np.ndarray:
    h, w = a.shape[0] // s, a.shape[1] // s
    return a[:h * s, :w * s].reshape(h, s, w, s).mean(axis=(1, 3))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default="/tmp/bench_browse")
    ap.add_argument("--phase-max", type=float, default=3.0)
    ap.add_argument("--planes", type=int, default=5, help="z planes of the layers and of the OME-Zarr")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rank", type=int, default=8, help="terms of the tile models (the CLI's default: 8)")
    ap.add_argument("--rank-tol", type=float, default=None,
                    help="the pyramid's rank truncation (default: tiles.pyramid.RANK_TOL; 0: the full rank)")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model, zarr_path = build(Path(args.cache), args.phase_max, args.planes, args.rank)
    res: dict = {"threads": torch.get_num_threads()}

    from napari_fpminr._napari._prefetch import Prefetcher
    from napari_fpminr.tiles.pyramid import MosaicPyramid

    t_open = time.perf_counter()
    levels, meta = _layers(model)  # reads every tile model and builds the coarsest level's preview
    res["open_s"] = time.perf_counter() - t_open
    lv = meta["metadata"]["fpminr_levels"]
    pyr = lv.pyramid
    if args.rank_tol is not None:  # before anything but the coarsest level's preview is decoded
        pyr.rank_tol = args.rank_tol
    res["rank_tol"] = pyr.rank_tol
    z_um = meta["metadata"]["fpminr_z_um"]
    n_z = len(z_um)
    H, W = levels[0].shape[1:]
    y0, x0 = H // 2 - VIEW[0] // 2, W // 2 - VIEW[1] // 2
    view = (slice(y0, y0 + VIEW[0]), slice(x0, x0 + VIEW[1]))
    res.update(frame_hr=[H, W], tiles=pyr.mosaic.layout.n_tiles, planes=n_z, view=list(VIEW))

    def clear():
        with pyr._lock:
            pyr._images.items.clear()
            pyr._images.bytes = 0

    t_load = _timed(pyr.load_tiles)
    res["load_all_tile_models_s"] = t_load
    planes = [i for i in range(1, n_z - 1) if i != n_z // 2][: args.repeats]  # never decoded before

    # full-resolution view at a new z (tile models loaded)
    full = []
    for iz in planes:
        clear()
        full.append(_timed(lambda: np.asarray(levels[0][iz, view[0], view[1]])))
    res["full_view_s"] = statistics.median(full)
    res["full_view_runs_s"] = full
    res["full_view_cached_s"] = _timed(lambda: np.asarray(levels[0][planes[-1], view[0], view[1]]))

    # the same view from the fpm OME-Zarr of the same slide (baseline): page cache warm, and cold
    # (this slide's chunk files dropped from the page cache with posix_fadvise before each read)
    zlevels, zmeta = _layers(zarr_path)
    zplanes = [i % zlevels[0].shape[0] for i in range(args.repeats)]
    for iz in zplanes:
        np.asarray(zlevels[0][iz, view[0], view[1]])  # warm the page cache
    zl = [_timed(lambda: np.asarray(zlevels[0][iz, view[0], view[1]])) for iz in zplanes]
    cold = []
    for iz in zplanes:
        _drop_page_cache(zarr_path)
        cold.append(_timed(lambda: np.asarray(zlevels[0][iz, view[0], view[1]])))
    res["zarr_full_view_s"] = statistics.median(zl)
    res["zarr_full_view_runs_s"] = zl
    res["zarr_full_view_cold_s"] = statistics.median(cold)
    res["zarr_full_view_cold_runs_s"] = cold
    res["full_over_zarr"] = res["full_view_s"] / res["zarr_full_view_s"]
    res["full_over_zarr_cold"] = res["full_view_s"] / res["zarr_full_view_cold_s"]

    # zoomed out to fit: the level napari shows for the whole field on a 1920x1080 canvas
    fit = next(i for i, a in enumerate(levels) if a.shape[1] <= VIEW[0] and a.shape[2] <= VIEW[1])
    step = lv.steps[fit]
    # the first zoom-out ever (plane 0, not among the timed ones): builds every tile's node images
    # at that level (tiles/pyramid.py) -- a one-time cost, like the component fields of level 0
    res["fit_first_view_s"] = _timed(lambda: np.asarray(levels[fit][0]))
    nodes = [pyr._prepared(t).nodes.get(step) for t in pyr.mosaic.layout.tiles()]
    nodes = [n for n in nodes if n is not None]
    res["fit_node_images"] = {"tiles": len(nodes), "nodes_per_tile": sorted({int(n[0].size) for n in nodes}),
                              "mb": sum(n[1].nbytes for n in nodes) / 1e6}
    fits = []
    for iz in planes:
        clear()
        fits.append(_timed(lambda: np.asarray(levels[fit][iz])))
    res.update(fit_level=fit, fit_step=step, fit_shape=list(levels[fit].shape[1:]),
               fit_view_s=statistics.median(fits), fit_view_runs_s=fits)
    res["fit_over_full"] = res["fit_view_s"] / res["full_view_s"]
    # the same zoom-out decoded from the component fields at every plane (node_images=False: what
    # this level did before the node images), same run
    fld = MosaicPyramid(pyr.mosaic, node_images=False, rank_tol=pyr.rank_tol)
    fld._models = pyr._models  # the same prepared tile models (loaded already)
    had = {key: set(item[0].folded) for key, item in pyr._models.items.items()}
    res["fit_from_fields_first_s"] = _timed(  # its component fields at that level, once
        lambda: fld.region(float(z_um[0]), step, (0, 0) + tuple(levels[fit].shape[1:])))
    fld_runs = [_timed(lambda: fld.region(float(z_um[iz]), step, (0, 0) + tuple(levels[fit].shape[1:])))
                for iz in planes]
    res["fit_from_fields_s"] = statistics.median(fld_runs)
    res["fit_from_fields_runs_s"] = fld_runs
    res["fit_from_fields_over_full"] = res["fit_from_fields_s"] / res["full_view_s"]
    res["fit_nodes_vs_fields_psnr_db"] = min(
        psnr(np.asarray(levels[fit][iz]), fld.region(float(z_um[iz]), step, (0, 0) + tuple(levels[fit].shape[1:])))
        for iz in planes)
    for key, item in pyr._models.items.items():  # drop the component fields it added to the shared models
        for g in set(item[0].folded) - had.get(key, set()):
            del item[0].folded[g]
    del fld
    res["zarr_fit_view_s"] = statistics.median(
        [_timed(lambda: np.asarray(zlevels[fit][iz])) for iz in zplanes])
    # quality of the zoomed-out image: against the full-resolution amplitude area-averaged
    iz = planes[0]
    overview = np.asarray(levels[fit][iz])
    # its own caches (the whole field at level 0 is not a user's view), all the terms of the models
    reference = MosaicPyramid(pyr.mosaic, rank_tol=0.0)
    full_res = reference.region(float(z_um[iz]), 1, (0, 0, H, W))
    del reference
    ref = pool(full_res, step)
    res["fit_psnr_vs_area_average_db"] = psnr(overview, ref)
    res["point_subsampled_psnr_db"] = psnr(full_res[::step, ::step], ref)
    # the full-resolution view (component fields truncated to rank_tol) against the full rank
    res["full_view_vs_full_rank_psnr_db"] = psnr(np.asarray(levels[0][iz, view[0], view[1]]), full_res[view])
    res["component_terms_level0"] = sorted({int(f.shape[0]) for item in pyr._models.items.values()
                                            for g, (f, flat, _) in item[0].folded.items()
                                            if g[0] == 1 and flat is None})
    # the alternative: low-pass the complex field to the level's band (decoded per plane)
    k1 = MosaicPyramid(pyr.mosaic, antialias=1, node_images=False)
    k1.region(float(z_um[planes[-1]]), step, (0, 0) + ref.shape)  # its tile preparation, once
    res["complex_lowpass_only_fit_s"] = _timed(lambda: k1.region(float(z_um[iz]), step, (0, 0) + ref.shape))
    res["complex_lowpass_only_psnr_db"] = psnr(k1.region(float(z_um[iz]), step, (0, 0) + ref.shape), ref)
    del k1

    # before this issue: every level decoded at full resolution, then every 2^L-th pixel kept
    # (MosaicModel.render, tile models loaded in its own cache)
    old = pyr.mosaic
    old.render([z_um[planes[0]]], (y0, x0) + VIEW, parts=("amplitude",))
    res["old_full_view_s"] = statistics.median(
        [_timed(lambda: old.render([z_um[iz]], (y0, x0) + VIEW, parts=("amplitude",))) for iz in planes[:3]])
    old_cache = old._cache_size
    old._cache_size = old.layout.n_tiles
    res["old_fit_view_s"] = statistics.median(
        [_timed(lambda: old.render([z_um[iz]], None, step, parts=("amplitude",))) for iz in planes[:2]])
    old._cache_size = old_cache

    # z step with prefetch: view at iz, the prefetcher decodes iz ± 1 in the background, step to iz + 1
    pf = Prefetcher([lv], depth=1)
    steps_s = []
    for iz in planes[:2]:
        clear()
        np.asarray(levels[0][iz, view[0], view[1]])
        pf.schedule(iz, 1, (y0, x0, VIEW[0], VIEW[1]))
        t0 = time.perf_counter()
        pf.wait(60)
        res.setdefault("prefetch_background_s", []).append(time.perf_counter() - t0)
        steps_s.append(_timed(lambda: np.asarray(levels[0][iz + 1, view[0], view[1]])))
    pf.close()
    res["z_step_prefetched_s"] = statistics.median(steps_s)
    res["z_step_prefetched_runs_s"] = steps_s
    res["image_cache_mb"] = pyr._images.bytes / 1e6
    res["model_cache_mb"] = pyr._models.bytes / 1e6
    print(json.dumps(res, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
