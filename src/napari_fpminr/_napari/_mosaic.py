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

from ._layers import KIND_KEY, Z_KEY, Z_LABEL, z_planes

__all__ = ["mosaic_layer_data", "MosaicLevels", "MOSAIC_KEY"]

MOSAIC_KEY = "fpminr_mosaic"
CHUNK_PX = 512
CHUNK_CACHE = 256
PREVIEW_PX = 512


class MosaicLevels:
    """Dask pyramid of one part (``amplitude`` or ``phase``) of a mosaic, with a decoded-chunk LRU."""

    def __init__(self, mosaic, z_um: np.ndarray, part: str = "amplitude", cache_chunks: int = CHUNK_CACHE):
        self.mosaic = mosaic
        self.z_um = np.asarray(z_um, np.float64)
        self.part = part
        self._cache: OrderedDict = OrderedDict()
        self._cache_size = int(cache_chunks)
        self._lock = Lock()
        self.decoded_chunks = 0
        H, W = mosaic.hr_shape
        self.steps = [1]
        while max(H, W) // self.steps[-1] > PREVIEW_PX:
            self.steps.append(self.steps[-1] * 2)

    def _chunk(self, iz: int, step: int, cy: int, cx: int) -> np.ndarray:
        key = (iz, step, cy, cx)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        H, W = self.mosaic.hr_shape
        ny, nx = -(-H // step), -(-W // step)
        y0, x0 = cy * CHUNK_PX, cx * CHUNK_PX
        h, w = min(CHUNK_PX, ny - y0), min(CHUNK_PX, nx - x0)
        region = (y0 * step, x0 * step, min((h - 1) * step + 1, H - y0 * step), min((w - 1) * step + 1, W - x0 * step))
        (out,) = self.mosaic.render([self.z_um[iz]], region, step, parts=(self.part,))
        out = out[0]
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
    amp = MosaicLevels(mosaic, z_um, "amplitude")
    preview = amp._chunk(int(np.argmin(np.abs(z_um - np.median(z_um)))), amp.steps[-1], 0, 0)
    lo, hi = np.percentile(preview, [0.5, 99.5]) if preview.size else (0.0, 1.0)
    for kind, levels, limits, cmap in (("phase", MosaicLevels(mosaic, z_um, "phase"), (-np.pi, np.pi),
                                        "twilight_shifted"),
                                       ("amplitude", amp, (float(lo), float(max(hi, lo + 1e-6))), "gray")):
        arrays = levels.levels()
        meta = {"name": f"{base} {kind}", "scale": (dz, dx, dx), "translate": (float(z_um[0]), 0.0, 0.0),
                "units": ("µm", "µm", "µm"), "axis_labels": (Z_LABEL, "y", "x"), "multiscale": len(arrays) > 1,
                "colormap": cmap, "contrast_limits": limits, "visible": kind == "amplitude",
                "metadata": {MOSAIC_KEY: mosaic, Z_KEY: z_um, KIND_KEY: kind, "fpminr_levels": levels}}
        layers.append((arrays if len(arrays) > 1 else arrays[0], meta, "image"))
    return layers
