"""An fpm OME-Zarr z-stack (``fpminr reconstruct ... -o stack.zarr``, tiled or not) as multiscale z layers.

The same kind of layers as a mosaic model (:mod:`._mosaic`): phase (hidden) and amplitude, each a
list of dask arrays ``(z, y, x)`` read lazily from the zarr levels (one chunk per 512² block and
plane), z in µm as the first axis (scale and translation from the OME-NGFF metadata), x and y in
µm. Nothing is read until napari asks for a view.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FPMInputError
from ._layers import KIND_KEY, Z_KEY, Z_LABEL

__all__ = ["is_fpm_zarr", "zarr_layer_data", "ZARR_KEY"]

ZARR_KEY = "fpminr_zarr"


def _attrs(path: Path) -> dict | None:
    try:
        return json.loads((path / ".zattrs").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_fpm_zarr(path) -> bool:
    """An OME-Zarr folder written by this program (never raises)."""
    p = Path(path)
    if not p.is_dir():
        return False
    attrs = _attrs(p)
    return isinstance(attrs, dict) and "fpminr" in attrs and "multiscales" in attrs


def zarr_layer_data(path, name: str | None = None) -> list[tuple[Any, dict, str]]:
    import dask.array as da
    import zarr

    path = Path(path)
    attrs = _attrs(path) or {}
    try:
        ms = attrs["multiscales"][0]
        root = zarr.open_group(str(path), mode="r")
        arrays, scales = [], []
        for ds in ms["datasets"]:
            arr = root[ds["path"]]
            if arr.ndim != 4:
                raise ValueError(f"level {ds['path']} has {arr.ndim} axes, expected z, c, y, x")
            scale = next(t["scale"] for t in ds["coordinateTransformations"] if t["type"] == "scale")
            arrays.append(da.from_zarr(arr))
            scales.append([float(v) for v in scale])
        z_um = np.asarray(attrs["fpminr"].get("z_um"), np.float64)
        if z_um.size != arrays[0].shape[0]:
            raise ValueError(f"{z_um.size} depths listed for {arrays[0].shape[0]} planes")
    except (KeyError, IndexError, TypeError, ValueError, StopIteration) as exc:
        raise FPMInputError(f"not a readable fpminr OME-Zarr stack ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:120]})", path) from None
    dz = float(np.median(np.diff(z_um))) if z_um.size > 1 else 1.0
    dx = scales[0][2]
    base = name or f"stack {path.stem}"
    layers = []
    n_c = arrays[0].shape[1]
    for c, kind in ((1, "phase"), (0, "amplitude")):
        if c >= n_c:
            continue
        levels = [a[:, c] for a in arrays]
        if kind == "amplitude":
            preview = np.asarray(levels[-1][int(np.argmin(np.abs(z_um - np.median(z_um))))])
            lo, hi = np.percentile(preview, [0.5, 99.5]) if preview.size else (0.0, 1.0)
            limits, cmap = (float(lo), float(max(hi, lo + 1e-6))), "gray"
        else:
            limits, cmap = (-np.pi, np.pi), "twilight_shifted"
        meta = {"name": f"{base} {kind}", "scale": (dz, dx, dx), "translate": (float(z_um[0]), 0.0, 0.0),
                "units": ("µm", "µm", "µm"), "axis_labels": (Z_LABEL, "y", "x"), "multiscale": len(levels) > 1,
                "colormap": cmap, "contrast_limits": limits, "visible": kind == "amplitude",
                "metadata": {ZARR_KEY: str(path), Z_KEY: z_um, KIND_KEY: kind}}
        layers.append((levels if len(levels) > 1 else levels[0], meta, "image"))
    return layers
