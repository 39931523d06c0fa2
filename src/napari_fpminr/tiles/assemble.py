"""Blending finished tiles into outputs: a region, the whole field, an OME-Zarr pyramid.

Every output is computed from the tile files alone, in a fixed order (the layout's tiles
touching each region, raster order), so it does not depend on which worker finished first or
whether the run was interrupted and resumed.

* :func:`stack_region`: fpm tiles blended over an hr region (reads only the touched tiles' slices);
* :func:`write_whole`: ``.npz`` / ``.tif`` of the whole field (assembled in memory at the end,
  for small slides);
* :func:`write_ome_zarr`: OME-NGFF 0.4 multiscale z-stack (axes z, c, y, x; z in µm; levels halve
  y and x by 2×2 averaging), written block by block so the field is never held whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..tile_layout import TileLayout

__all__ = ["stack_region", "mosaic_source", "write_whole", "write_ome_zarr", "BLOCK"]

BLOCK = 512  # hr px per OME-Zarr block and chunk


def stack_region(layout: TileLayout, markers: dict, work_dir, region, n_planes: int) -> tuple[np.ndarray, np.ndarray]:
    """Blended ``(amplitude, phase)`` float32 ``(Z, h, w)`` of fpm tiles over the hr ``region``."""
    top, left, h, w = region
    amp = np.zeros((n_planes, h, w), np.float32)
    phase = np.zeros((n_planes, h, w), np.float32)
    for tile in layout.tiles_touching(top, left, h, w):
        t0, l0, th, tw = layout.hr_window(tile)
        y0, y1 = max(top, t0), min(top + h, t0 + th)
        x0, x1 = max(left, l0), min(left + w, l0 + tw)
        weight = layout.weight(tile)[y0 - t0:y1 - t0, x0 - l0:x1 - l0]
        path = Path(work_dir) / markers[(tile.row, tile.col)]["file"]
        a, p = _tile_slices(path, (n_planes, th, tw), (slice(y0 - t0, y1 - t0), slice(x0 - l0, x1 - l0)))
        amp[:, y0 - top:y1 - top, x0 - left:x1 - left] += a * weight
        phase[:, y0 - top:y1 - top, x0 - left:x1 - left] += p * weight
    return amp, phase


def _tile_slices(path: Path, shape: tuple[int, int, int], window) -> tuple[np.ndarray, np.ndarray]:
    """``(amplitude, phase)`` of a tile file over ``window``; one-line error when the file is not the
    float32 ``shape`` tile the job expects (checked before any data is read)."""
    from safetensors import safe_open

    from ..errors import FPMInputError

    try:
        with safe_open(str(path), framework="np") as f:
            for name in ("amplitude", "phase"):
                sl = f.get_slice(name)
                if tuple(sl.get_shape()) != shape or sl.get_dtype() != "F32":
                    raise FPMInputError(f"tile {name} is {sl.get_dtype()} {tuple(sl.get_shape())}, expected "
                                        f"F32 {shape}", path)
            return (f.get_slice("amplitude")[:, window[0], window[1]],
                    f.get_slice("phase")[:, window[0], window[1]])
    except FPMInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own errors for damaged files
        raise FPMInputError(f"cannot read the tile file: {' '.join(str(exc).split())[:160]}", path) from None


def mosaic_source(mosaic, z_um) -> Callable:
    """``region -> (amplitude, phase)`` of a mosaic model at the planes ``z_um`` (float32 ``(Z, h, w)``).

    Decoded through a :class:`~.pyramid.MosaicPyramid` at level 0 (the same values as
    ``mosaic.render``, each tile decoded once per plane however many blocks it meets).
    """
    from .pyramid import MosaicPyramid

    pyramid = MosaicPyramid(mosaic)
    planes = [float(z) for z in np.atleast_1d(np.asarray(z_um, np.float64))]

    def render(region):
        return tuple(np.stack([pyramid.region(z, 1, region, part) for z in planes]) for part in ("amplitude", "phase"))
    return render


def write_whole(out, source: Callable, layout: TileLayout, z_um: np.ndarray, dx_hr_um: float) -> Path:
    """``.npz`` / ``.tif`` of the whole field (``source(region) -> (amplitude, phase)``)."""
    from ..io.stack_files import StackArrays, write_stack

    H, W = layout.hr_shape
    amp, phase = source((0, 0, H, W))
    return write_stack(out, StackArrays(amp, phase, np.asarray(z_um, np.float64), dx_hr_um))


def n_levels(hr_shape, min_side: int = 256) -> int:
    levels = 1
    while min(hr_shape) // (2 ** levels) >= min_side and levels < 8:
        levels += 1
    return levels


def _pool(a: np.ndarray, f: int) -> np.ndarray:
    z, h, w = a.shape
    h2, w2 = h // f, w // f
    return a[:, :h2 * f, :w2 * f].reshape(z, h2, f, w2, f).mean(axis=(2, 4))


def write_ome_zarr(out, source: Callable, layout: TileLayout, z_um: np.ndarray, dx_hr_um: float,
                   progress: Callable[[int, int], None] | None = None, attrs: dict | None = None) -> Path:
    """OME-NGFF 0.4 multiscale ``(z, c, y, x)`` z-stack written block by block (atomic folder)."""
    import os
    import shutil
    import tempfile

    import zarr

    from ..io.safety import clean_stale, writing
    from ..io.stack_files import _commit_dir

    out = Path(out)
    z = np.asarray(z_um, np.float64)
    H, W = layout.hr_shape
    levels = n_levels((H, W))
    with writing(out):
        clean_stale(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp", dir=out.parent))
        try:
            root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
            arrays = []
            for lv in range(levels):
                f = 2 ** lv
                shape = (z.size, 2, H // f, W // f)
                arrays.append(root.create_array(str(lv), shape=shape, dtype=np.float32,
                                                chunks=(1, 1, min(BLOCK, shape[2]), min(BLOCK, shape[3]))))
            blocks = [(t, l) for t in range(0, H, BLOCK) for l in range(0, W, BLOCK)]
            for i, (t, l) in enumerate(blocks):
                h, w = min(BLOCK, H - t), min(BLOCK, W - l)
                amp, phase = source((t, l, h, w))
                for lv, arr in enumerate(arrays):
                    f = 2 ** lv
                    a, p = (_pool(amp, f), _pool(phase, f)) if f > 1 else (amp, phase)
                    if a.shape[1] == 0 or a.shape[2] == 0:
                        continue
                    arr[:, 0, t // f:t // f + a.shape[1], l // f:l // f + a.shape[2]] = a
                    arr[:, 1, t // f:t // f + a.shape[1], l // f:l // f + a.shape[2]] = p
                if progress is not None:
                    progress(i + 1, len(blocks))
            dz = float(np.median(np.diff(z))) if z.size > 1 else 1.0
            root.attrs["multiscales"] = [{
                "version": "0.4", "name": "fpminr",
                "axes": [{"name": "z", "type": "space", "unit": "micrometer"},
                         {"name": "c", "type": "channel"},
                         {"name": "y", "type": "space", "unit": "micrometer"},
                         {"name": "x", "type": "space", "unit": "micrometer"}],
                "datasets": [{"path": str(lv), "coordinateTransformations": [
                    {"type": "scale", "scale": [dz, 1.0, dx_hr_um * 2 ** lv, dx_hr_um * 2 ** lv]},
                    {"type": "translation", "translation": [float(z[0]), 0.0, 0.0, 0.0]}]}
                    for lv in range(levels)],
            }]
            root.attrs["omero"] = {"channels": [{"label": "amplitude"}, {"label": "phase"}]}
            root.attrs["fpminr"] = {"z_um": z.tolist(), "tiles": layout.to_dict(), **(attrs or {})}
            _commit_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out
