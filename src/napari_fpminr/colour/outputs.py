"""Writers of colour stacks: ``.npz``, ImageJ RGB ``.tif`` and OME-Zarr ``.zarr`` (atomic, like single stacks).

* ``.npz``: ``transmittance`` (Z, 3, H, W) float32, white-balanced |o|² in R, G, B order; ``rgb``
  (Z, H, W, 3) uint8 sRGB; ``amplitude`` and ``phase`` (Z, 3, H, W) float32 (when rendered);
  ``z_um`` (Z,); ``dx_um``; ``wavelength_um`` (3,); ``depth_um`` (H, W) for all-in-focus images.
* ``.tif``: an ImageJ RGB hyperstack (Z, H, W, 3) uint8 sRGB, pixel size and z spacing in µm.
* ``.zarr``: OME-NGFF 0.4 image (zarr format 2), axes z/c/y/x, c = the three transmittances, with
  ``omero`` channels coloured FF0000 / 00FF00 / 0000FF and windows 0..1 (white = 1).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import FPMInputError
from ..io.atomic import atomic_write
from ..io.safety import clean_stale, writing
from ..io.stack_files import STACK_SUFFIXES, _commit_dir, _z_spacing
from .model import CHANNELS, ColourSlices

__all__ = ["write_colour_stack"]

CHANNEL_COLOURS = ("FF0000", "00FF00", "0000FF")


def write_colour_stack(path: str | Path, slices: ColourSlices, z_um, dx_um: float,
                       wavelength_um=(0.63, 0.532, 0.475), depth_um: np.ndarray | None = None) -> Path:
    """Write colour ``slices`` at ``z_um`` to ``path`` (format by suffix; atomic; errors name ``path``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in STACK_SUFFIXES:
        raise FPMInputError(f"unknown output format {suffix!r}; use one of {', '.join(STACK_SUFFIXES)}", path)
    t = np.asarray(slices.transmittance, np.float32)
    z = np.atleast_1d(np.asarray(z_um, np.float64))
    if t.ndim != 4 or t.shape[1] != 3 or t.shape[0] != z.size:
        raise FPMInputError(f"colour transmittance must be (Z, 3, H, W) with {z.size} planes, got {t.shape}", path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".zarr":
            clean_stale(path)
            if path.exists() and not path.is_dir():
                raise FPMInputError("exists and is not a folder; remove it or choose another output", path)
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
            try:
                _write_zarr(tmp, t, z, dx_um, wavelength_um, depth_um)
                _commit_dir(tmp, path)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        else:
            with atomic_write(path) as tmp:
                if suffix == ".npz":
                    _write_npz(tmp, slices, z, dx_um, wavelength_um, depth_um)
                else:
                    _write_tif(tmp, slices.rgb, z, dx_um)
    return path


def _write_npz(tmp: Path, s: ColourSlices, z: np.ndarray, dx_um: float, wavelength_um, depth_um=None) -> None:
    arrays = {"transmittance": np.asarray(s.transmittance, np.float32), "rgb": s.rgb, "z_um": z,
              "dx_um": np.float64(dx_um), "wavelength_um": np.asarray(wavelength_um, np.float64)}
    if s.amplitude is not None:
        arrays["amplitude"] = np.asarray(s.amplitude, np.float32)
    if s.phase is not None:
        arrays["phase"] = np.asarray(s.phase, np.float32)
    if depth_um is not None:
        arrays["depth_um"] = np.asarray(depth_um, np.float32)
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def _write_tif(tmp: Path, rgb: np.ndarray, z: np.ndarray, dx_um: float) -> None:
    import tifffile

    res = 1.0 / dx_um
    tifffile.imwrite(tmp, np.ascontiguousarray(rgb), imagej=True, photometric="rgb", resolution=(res, res),
                     metadata={"axes": "ZYXS", "spacing": _z_spacing(z), "unit": "um",
                               "Info": f"napari-fpminr colour z_um={z.tolist()}"})


def _write_zarr(tmp: Path, t: np.ndarray, z: np.ndarray, dx_um: float, wavelength_um, depth_um=None) -> None:
    import zarr

    root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
    arr = root.create_array("0", shape=t.shape, dtype=np.float32, chunks=(1, 1) + t.shape[2:])
    for iz in range(t.shape[0]):
        for ic in range(3):
            arr[iz, ic] = t[iz, ic]
    root.attrs["multiscales"] = [{
        "version": "0.4", "name": "fpminr-colour",
        "axes": [{"name": "z", "type": "space", "unit": "micrometer"}, {"name": "c", "type": "channel"},
                 {"name": "y", "type": "space", "unit": "micrometer"},
                 {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [_z_spacing(z), 1.0, dx_um, dx_um]},
            {"type": "translation", "translation": [float(z[0]), 0.0, 0.0, 0.0]}]}],
    }]
    top = float(max(1.0, np.nanmax(t))) if t.size else 1.0
    root.attrs["omero"] = {
        "name": "fpminr colour transmittance", "version": "0.4",
        "rdefs": {"model": "color", "defaultZ": int(t.shape[0] // 2)},
        "channels": [{"label": f"{name} {1000 * lam:.0f} nm", "color": colour, "active": True,
                      "coefficient": 1.0, "family": "linear", "inverted": False,
                      "window": {"start": 0.0, "end": 1.0, "min": 0.0, "max": top}}
                     for name, colour, lam in zip(CHANNELS, CHANNEL_COLOURS, wavelength_um, strict=True)],
    }
    root.attrs["fpminr"] = {"z_um": z.tolist(), "quantity": "white-balanced intensity transmittance",
                            "wavelength_um": [float(v) for v in wavelength_um]}
    if depth_um is not None:
        depth = np.asarray(depth_um, np.float32)
        root.create_array("depth_um", shape=depth.shape, dtype=np.float32, chunks=depth.shape)[...] = depth
