"""All-in-focus of a whole-slide mosaic, tile by tile, blended; its best-focus map as text.

Each tile touching the requested hr region decodes its planes over its own window, is fused by
:func:`napari_fpminr.volume.all_in_focus` (its own patches, so a tilted slide gets each tile's
own depths), and the fused amplitudes are blended with the layout's weights, which sum to 1.
Depths are blended with the same weights over the tiles that found structure there (NaN where
none did). Memory: one tile's planes at a time, plus the region's two output images.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..volume import all_in_focus

__all__ = ["mosaic_all_in_focus", "best_focus_text"]


def mosaic_all_in_focus(mosaic, z_um, region=None, patch: int = 64, stride: int = 16, measure: str = "auto",
                        progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fused amplitude and depth map (µm, NaN without structure), float32 ``(h, w)``, over ``region``."""
    z = np.asarray(z_um, np.float64).reshape(-1)
    H, W = mosaic.hr_shape
    top, left, h, w = (0, 0, H, W) if region is None else (int(v) for v in region)
    fused = np.zeros((h, w), np.float64)
    depth_sum = np.zeros((h, w), np.float64)
    depth_w = np.zeros((h, w), np.float64)
    tiles = mosaic.layout.tiles_touching(top, left, h, w)
    use_phase = measure != "nv"
    for i, tile in enumerate(tiles):
        t0, l0, th, tw = mosaic.layout.hr_window(tile)
        model = mosaic.tile_model(tile.row, tile.col)
        parts = ("amplitude", "phase") if use_phase else ("amplitude",)
        decoded = model.render_parts(z, parts)
        amp, phase = decoded[0], (decoded[1] if use_phase else None)
        f, d = all_in_focus(amp, z, patch=min(patch, th, tw), stride=stride, phase=phase, measure=measure)
        scale = float(mosaic.tiles[(tile.row, tile.col)]["amplitude_scale"])
        weight = mosaic.layout.weight(tile).astype(np.float64)
        y0, y1 = max(top, t0), min(top + h, t0 + th)
        x0, x1 = max(left, l0), min(left + w, l0 + tw)
        win = (slice(y0 - t0, y1 - t0), slice(x0 - l0, x1 - l0))
        out = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
        wt = weight[win]
        fused[out] += f[win] * scale * wt
        has = np.isfinite(d[win])
        depth_sum[out] += np.where(has, d[win], 0.0) * wt
        depth_w[out] += np.where(has, wt, 0.0)
        if progress is not None:
            progress(i + 1, len(tiles))
    with np.errstate(invalid="ignore", divide="ignore"):
        depth = np.where(depth_w > 1e-6, depth_sum / np.maximum(depth_w, 1e-12), np.nan)
    return fused.astype(np.float32), depth.astype(np.float32)


def best_focus_text(mosaic, max_cols: int = 24) -> str:
    """The per-tile best-focus depths (µm) as a text grid (rows of tiles; grids wider than
    ``max_cols`` are averaged over blocks of tiles, and the block size is said)."""
    bf = mosaic.best_focus_map()
    r, c = bf.shape
    f = max(1, -(-max(r, c) // max_cols))
    if f > 1:
        rr, cc = -(-r // f), -(-c // f)
        pad = np.full((rr * f, cc * f), np.nan)
        pad[:r, :c] = bf
        with np.errstate(invalid="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                bf = np.nanmean(pad.reshape(rr, f, cc, f), axis=(1, 3))
    head = (f"best focus (um) per tile, {r} x {c} tiles" if f == 1
            else f"best focus (um), mean of {f} x {f} tiles per entry, {r} x {c} tiles")
    rows = [" ".join("   nan" if not np.isfinite(v) else f"{v:+6.2f}" for v in row) for row in bf]
    return "\n".join([head] + rows)
