"""A whole-slide mosaic (``fpminr reconstruct --tile ... -o slide.fpminr``) as ONE lazy multiscale layer.

Each pyramid level ``L`` is a :class:`LevelArray` ``(z, y, x)`` of the whole field at step
``2**L`` hr px (napari's layer-data protocol: ``shape``, ``dtype``, ``ndim``, ``size``,
``__getitem__``); z in µm is the first axis (scale and translate), x and y in µm. Indexing it with
the view napari asks for decodes, in ONE batch, only the tiles under that view that are not cached
(:class:`~napari_fpminr.tiles.pyramid.MosaicPyramid`: each level at its own resolution, area-
averaged), so there is no chunk overhang and no per-chunk overhead. Decoded tile images stay in
the pyramid's byte-budgeted cache, so going back to a recent view, or to a plane that the
prefetcher decoded (:mod:`._prefetch`), only assembles cached tiles.

Non-blocking mode (:attr:`MosaicLevels.nonblocking`, set by :mod:`._mosaic_view` once the layer
is on a canvas): a view whose tiles are not all decoded returns at once the same view from the
coarsest level (repeated to size) and the glue's :attr:`MosaicLevels.on_view` has it decoded in
the background; the layer is refreshed when it is ready. Reading the data outside a viewer
always decodes.
"""

from __future__ import annotations

from threading import Lock
from typing import Any, Callable

import numpy as np

from ..tiles.pyramid import MosaicPyramid, level_steps
from ._layers import KIND_KEY, Z_KEY, Z_LABEL, z_planes

__all__ = ["mosaic_layer_data", "MosaicLevels", "LevelArray", "MOSAIC_KEY"]

MOSAIC_KEY = "fpminr_mosaic"
LEVELS_KEY = "fpminr_levels"
PREVIEW_PX = 512


class MosaicLevels:
    """The pyramid of one part (``amplitude`` or ``phase``) of a mosaic at the layer's z planes."""

    def __init__(self, mosaic, z_um: np.ndarray, part: str = "amplitude", pyramid: MosaicPyramid | None = None):
        self.mosaic = mosaic
        self.pyramid = pyramid if pyramid is not None else MosaicPyramid(mosaic)
        self.z_um = np.asarray(z_um, np.float64)
        self.part = part
        self.steps = level_steps(mosaic.hr_shape, PREVIEW_PX)
        self.views = 0          # views assembled (tests)
        self.placeholders = 0   # views answered from the coarsest level while the real one decodes
        #: ``on_view(iz, step, region, shown_placeholder)``: called for every view read (the glue's prefetch)
        self.on_view: Callable[[int, int, tuple, bool], None] | None = None
        #: answer a view that is not decoded yet with the coarsest level at once (canvas mode)
        self.nonblocking = False
        self._lock = Lock()

    def ready(self, iz: int, step: int, region) -> bool:
        """Every tile under the view is decoded (reading it only assembles cached tiles)."""
        return self.pyramid.has(float(self.z_um[iz]), step, self._hr(step, region), self.part)

    def _hr(self, step: int, region) -> tuple[int, int, int, int]:
        top, left, h, w = region
        H, W = self.mosaic.hr_shape
        return (top * step, left * step, min(h * step, H - top * step), min(w * step, W - left * step))

    def view(self, iz: int, step: int, region, cancelled=None) -> np.ndarray | None:
        """Level ``step`` at plane ``iz`` over the level-pixel ``region`` (top, left, h, w)."""
        out = self.pyramid.region(float(self.z_um[iz]), step, region, self.part, cancelled)
        if out is not None:
            with self._lock:
                self.views += 1
        return out

    def _shown(self, iz: int, step: int, region) -> np.ndarray:
        """What the canvas gets: the view, or (non-blocking, not decoded yet) a coarse stand-in."""
        region = tuple(int(v) for v in region)
        coarsest = step == self.steps[-1]
        if not self.nonblocking or coarsest or self.ready(iz, step, region):
            out = self.view(iz, step, region)
            # napari also reads the coarsest level for the layer's thumbnail: that read must not
            # supersede the prefetch of the view on the canvas (whose stand-in waits for it)
            if self.on_view is not None and (not coarsest or len(self.steps) == 1):
                self.on_view(iz, step, region, False)
            return out
        coarse = self.steps[-1]
        f = coarse // step
        top, left, h, w = region
        c_top, c_left = top // f, left // f
        c_h, c_w = -(-(top + h) // f) - c_top, -(-(left + w) // f) - c_left
        img = self.view(iz, coarse, (c_top, c_left, c_h, c_w))
        big = np.repeat(np.repeat(img, f, axis=0), f, axis=1)
        with self._lock:
            self.placeholders += 1
        if self.on_view is not None:
            self.on_view(iz, step, region, True)
        return np.ascontiguousarray(big[top - c_top * f:top - c_top * f + h, left - c_left * f:left - c_left * f + w])

    def level(self, step: int) -> "LevelArray":
        return LevelArray(self, step)

    def levels(self) -> list["LevelArray"]:
        return [self.level(s) for s in self.steps]


class LevelArray:
    """One level as napari layer data: ``(z, y, x)`` float32, decoded where it is indexed.

    Indexing with slices only (what napari does first: the displayed axes over every plane)
    returns a lazy view of the same kind; an integer plane index, or ``np.asarray``, decodes.
    """

    def __init__(self, levels: MosaicLevels, step: int, zs=None, ys=None, xs=None):
        self.levels = levels
        self.step = int(step)
        ny, nx = levels.pyramid.level_shape(self.step)
        self._zs = np.arange(levels.z_um.size) if zs is None else np.asarray(zs, np.int64)
        self._ys = (0, ny) if ys is None else ys
        self._xs = (0, nx) if xs is None else xs
        self.shape = (int(self._zs.size), self._ys[1] - self._ys[0], self._xs[1] - self._xs[0])
        self.dtype = np.dtype(np.float32)
        self.ndim = 3

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LevelArray({self.levels.part}, step {self.step}, shape {self.shape})"

    def __array__(self, dtype=None, copy=None):
        out = self._planes(self._zs, (0, self.shape[1], 1), (0, self.shape[2], 1))
        return out.astype(dtype) if dtype is not None else out

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (3 - len(key) + 1) + key[i + 1:]
        key = key + (slice(None),) * (3 - len(key))
        if len(key) != 3:
            raise IndexError(f"too many indices for a 3-axis level: {key}")
        zk, yk, xk = (k.item() if isinstance(k, np.integer) else k for k in key)
        ranges = [self._range(k, n) for k, n in zip((yk, xk), self.shape[1:])]
        zs = self._zs[zk]
        lazy = not isinstance(zk, int) and all(isinstance(k, slice) and r[2] == 1 for k, r in zip((yk, xk), ranges))
        if lazy:  # a view: nothing is decoded yet
            (y0, y1, _), (x0, x1, _) = ranges
            return LevelArray(self.levels, self.step, zs, (self._ys[0] + y0, self._ys[0] + y1),
                              (self._xs[0] + x0, self._xs[0] + x1))
        out = self._planes(np.atleast_1d(zs), *ranges)
        if isinstance(yk, int):
            out = out[:, 0]
        if isinstance(xk, int):
            out = out[..., 0]
        return out[0] if isinstance(zk, int) else out

    @staticmethod
    def _range(k, n: int) -> tuple[int, int, int]:
        if isinstance(k, int):
            i = k + n if k < 0 else k
            if not 0 <= i < n:
                raise IndexError(f"index {k} out of range for {n}")
            return (i, i + 1, 1)
        if isinstance(k, slice):
            start, stop, stride = k.indices(n)
            if stride < 1:
                raise IndexError("negative steps are not supported")
            return (start, max(stop, start), stride)
        raise IndexError(f"unsupported index {k!r}")

    def _planes(self, zs, yr, xr) -> np.ndarray:
        (y0, y1, sy), (x0, x1, sx) = yr, xr
        y0, y1, x0, x1 = y0 + self._ys[0], y1 + self._ys[0], x0 + self._xs[0], x1 + self._xs[0]
        if y1 <= y0 or x1 <= x0 or len(zs) == 0:
            return np.zeros((len(zs), max(y1 - y0, 0), max(x1 - x0, 0)), np.float32)[:, ::sy, ::sx]
        out = np.stack([self.levels._shown(int(i), self.step, (y0, x0, y1 - y0, x1 - x0)) for i in zs])
        return out[:, ::sy, ::sx]


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
    coarse = amp.level(amp.steps[-1])
    preview = coarse[int(np.argmin(np.abs(z_um - np.median(z_um))))]
    lo, hi = np.percentile(preview, [0.5, 99.5]) if preview.size else (0.0, 1.0)
    for kind, levels, limits, cmap in (("phase", MosaicLevels(mosaic, z_um, "phase", pyramid=pyramid), (-np.pi, np.pi),
                                        "twilight_shifted"),
                                       ("amplitude", amp, (float(lo), float(max(hi, lo + 1e-6))), "gray")):
        arrays = levels.levels()
        meta = {"name": f"{base} {kind}", "scale": (dz, dx, dx), "translate": (float(z_um[0]), 0.0, 0.0),
                "units": ("µm", "µm", "µm"), "axis_labels": (Z_LABEL, "y", "x"), "multiscale": len(arrays) > 1,
                "colormap": cmap, "contrast_limits": limits, "visible": kind == "amplitude", "cache": False,
                "metadata": {MOSAIC_KEY: mosaic, Z_KEY: z_um, KIND_KEY: kind, LEVELS_KEY: levels}}
        layers.append((arrays if len(arrays) > 1 else arrays[0], meta, "image"))
    return layers
