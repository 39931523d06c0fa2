"""A whole-slide mosaic (``fpminr reconstruct --tile ... -o slide.fpminr``) as ONE lazy multiscale layer.

Each pyramid level ``L`` is a dask array ``(z, y, x)`` of the whole field sampled every ``2**L``
hr pixels, in chunks of ``CHUNK_PX``; z in µm is the first axis (scale and translate), x and y in
µm. napari asks only for the chunks in view at the level it shows, so scrolling z or panning
decodes only the tiles under those chunks (:meth:`MosaicModel.render`). Decoded chunks are kept
in an LRU cache (``CHUNK_CACHE`` chunks, per layer) and the tile models behind them in the
mosaic's own LRU cache, so going back to a recent view decodes nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from threading import Lock
from typing import Any

import dask.array as da
import numpy as np

from ..tiles.pyramid import MosaicPyramid, level_steps
from ._layers import KIND_KEY, Z_KEY, Z_LABEL, z_planes

__all__ = ["mosaic_layer_data", "MosaicLevels", "MOSAIC_KEY"]

MOSAIC_KEY = "fpminr_mosaic"
CHUNK_PX = 512
CHUNK_CACHE = 256
PREVIEW_PX = 512


class MosaicLevels:
    """Dask pyramid of one part (``amplitude`` or ``phase``) of a mosaic, with a decoded-chunk LRU.

    Chunks come from a shared :class:`~napari_fpminr.tiles.pyramid.MosaicPyramid` (each level
    decoded at its own resolution, area-averaged); :meth:`prefetch` fills the chunk cache from a
    background thread.
    """

    def __init__(self, mosaic, z_um: np.ndarray, part: str = "amplitude", cache_chunks: int = CHUNK_CACHE,
                 pyramid: MosaicPyramid | None = None):
        self.mosaic = mosaic
        self.pyramid = pyramid if pyramid is not None else MosaicPyramid(mosaic)
        self.z_um = np.asarray(z_um, np.float64)
        self.part = part
        self._cache: OrderedDict = OrderedDict()
        self._cache_size = int(cache_chunks)
        self._lock = Lock()
        self.decoded_chunks = 0
        self.steps = level_steps(mosaic.hr_shape, PREVIEW_PX)

    def cached(self, iz: int, step: int, cy: int, cx: int) -> bool:
        with self._lock:
            return (iz, step, cy, cx) in self._cache

    def chunk_grid(self, step: int) -> tuple[int, int]:
        ny, nx = self.pyramid.level_shape(step)
        return (-(-ny // CHUNK_PX), -(-nx // CHUNK_PX))

    def chunks_in(self, step: int, region) -> list[tuple[int, int]]:
        """``(cy, cx)`` of the chunks of level ``step`` that meet the level-pixel ``region`` (top, left, h, w)."""
        top, left, h, w = (int(v) for v in region)
        gy, gx = self.chunk_grid(step)
        ys = range(max(top // CHUNK_PX, 0), min(-(-(top + h) // CHUNK_PX), gy))
        xs = range(max(left // CHUNK_PX, 0), min(-(-(left + w) // CHUNK_PX), gx))
        return [(cy, cx) for cy in ys for cx in xs]

    def _chunk(self, iz: int, step: int, cy: int, cx: int, cancelled=None) -> np.ndarray | None:
        key = (iz, step, cy, cx)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        ny, nx = self.pyramid.level_shape(step)
        y0, x0 = cy * CHUNK_PX, cx * CHUNK_PX
        region = (y0, x0, min(CHUNK_PX, ny - y0), min(CHUNK_PX, nx - x0))
        out = self.pyramid.region(float(self.z_um[iz]), step, region, self.part, cancelled)
        if out is None:
            return None
        with self._lock:
            self.decoded_chunks += 1
            self._cache[key] = out
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out

    def level(self, step: int) -> da.Array:
        H, W = self.mosaic.hr_shape
        ny, nx = -(-H // step), -(-W // step)
        chunks = ((1,) * self.z_um.size, _split(ny), _split(nx))

        def block(block_info=None):
            loc = block_info[None]["chunk-location"]
            return self._chunk(loc[0], step, loc[1], loc[2])[None]

        return da.map_blocks(block, dtype=np.float32, chunks=chunks, meta=np.empty((0, 0, 0), np.float32))

    def levels(self) -> list[da.Array]:
        return [self.level(s) for s in self.steps]


def _split(n: int) -> tuple[int, ...]:
    return tuple(min(CHUNK_PX, n - s) for s in range(0, n, CHUNK_PX))


def mosaic_layer_data(mosaic, z_um: np.ndarray | None = None, name: str | None = None) -> list[tuple[Any, dict, str]]:
    """Lazy phase (hidden) and amplitude (on top) multiscale layers over the whole slide."""
    if z_um is None:
        span = mosaic.z_max_um - mosaic.z_min_um
        z_um = z_planes(mosaic.z_min_um, mosaic.z_max_um, max(span / 40.0, 1e-3))
    z_um = np.asarray(z_um, np.float64)
    dz = float(np.median(np.diff(z_um))) if z_um.size > 1 else 1.0
    dx = float(mosaic.dx_hr_um)
    base = name or f"mosaic {mosaic.path.stem}"
    layers = []
    pyramid = MosaicPyramid(mosaic)
    amp = MosaicLevels(mosaic, z_um, "amplitude", pyramid=pyramid)
    preview = amp._chunk(int(np.argmin(np.abs(z_um - np.median(z_um)))), amp.steps[-1], 0, 0)
    lo, hi = np.percentile(preview, [0.5, 99.5]) if preview.size else (0.0, 1.0)
    for kind, levels, limits, cmap in (("phase", MosaicLevels(mosaic, z_um, "phase", pyramid=pyramid), (-np.pi, np.pi),
                                        "twilight_shifted"),
                                       ("amplitude", amp, (float(lo), float(max(hi, lo + 1e-6))), "gray")):
        arrays = levels.levels()
        meta = {"name": f"{base} {kind}", "scale": (dz, dx, dx), "translate": (float(z_um[0]), 0.0, 0.0),
                "units": ("µm", "µm", "µm"), "axis_labels": (Z_LABEL, "y", "x"), "multiscale": len(arrays) > 1,
                "colormap": cmap, "contrast_limits": limits, "visible": kind == "amplitude",
                "metadata": {MOSAIC_KEY: mosaic, Z_KEY: z_um, KIND_KEY: kind, "fpminr_levels": levels}}
        layers.append((arrays if len(arrays) > 1 else arrays[0], meta, "image"))
    return layers
