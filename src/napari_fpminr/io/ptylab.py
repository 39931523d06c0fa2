"""Reader for PtyLab FPM ``.hdf5`` files (DESIGN.md §2).

Datasets (SI units, Python axis order): ``ptychogram`` N×H×W intensities, ``encoder`` N×2 LED
positions (m) in row/column order ``(y, x)``, ``zled`` LED-to-sample distance (m), ``dxd``
camera pixel (m), ``magnification``, ``NA`` (objective; optional in PtyLab), ``wavelength`` (m),
optional ``orientation`` (0-7, ptypy convention, applied to the images). napari-fpminr's
writer adds ``upsample``, ``z_um``, a complex ``pupil`` (rows = y, columns = x) and, for data
made by ``fpminr simulate``, the string ``acquisition = "simulated"`` (files without it are
measurements).

Illumination NA. PtyLab (``Reconstruction.positions`` in FPM mode) cuts the window of LED ``i``
from the hr spectrum at ``-(1/λ)·encoder_i/sqrt(|encoder_i|² + zled²)``, i.e. centred at
``-sin(θ_i)/λ`` in ``(row, col)``. DESIGN.md centres it at ``-(na_x, na_y)/λ``, so
``na_y = encoder[:, 0]/r`` and ``na_x = encoder[:, 1]/r`` with ``r = sqrt(|encoder|² + zled²)``
(no slab refraction). The writer inverts this exactly: ``encoder = na·zled/sqrt(1 - |na|²)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import FPMInputError, MissingParameterError
from ._common import build_raw, one_line, read_h5_datasets, require_keys, scalar
from ..rawdata import RawData

KEYS = ("ptychogram", "encoder")
REQUIRED_SCALARS = ("zled", "dxd", "magnification", "wavelength")
OPTIONAL = ("NA", "orientation", "upsample", "z_um", "pupil", "acquisition")


def _orient(images: np.ndarray, orientation: int, path: Path) -> np.ndarray:
    """ptypy orientation code: bit 2 transposes each image, then bit 0 flips columns, bit 1 rows.

    (This is the convention's intent; PtyLab applies ``np.fliplr``/``np.flipud`` to the 3D stack,
    which flips other axes. Files written here always carry orientation 0.)
    """
    if orientation not in range(8):
        raise FPMInputError(f"orientation must be 0..7, got {orientation}", path)
    if orientation & 4:
        images = np.swapaxes(images, 1, 2)
    if orientation & 1:
        images = images[:, :, ::-1]
    if orientation & 2:
        images = images[:, ::-1, :]
    return np.ascontiguousarray(images)


def _text(value) -> str | None:
    """A scalar HDF5 string dataset as ``str`` (``None`` for anything else)."""
    if value is None:
        return None
    item = np.asarray(value)
    if item.shape != () or item.dtype.kind not in "SUO":
        return None
    item = item.item()
    return item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)


def read_ptylab(path: Path, *, wavelength_um=None, na_obj=None, mag=None, pixel_um=None,
                upsample: int = 0) -> RawData:
    """Read a PtyLab FPM file; keyword arguments fill or replace parameters."""
    import h5py

    path = Path(path)
    try:  # only the datasets we use, sizes checked first; external links never followed
        with h5py.File(path, "r") as f:
            data = read_h5_datasets(f, KEYS + REQUIRED_SCALARS + OPTIONAL, path, large=("ptychogram",))
    except FPMInputError:
        raise
    except MemoryError:
        raise FPMInputError("not enough memory to read the ptychogram", path) from None
    except Exception as exc:
        raise FPMInputError(f"cannot read HDF5 file (truncated or corrupt?): {one_line(exc)}", path) from None
    require_keys(data, KEYS, "dataset", "PtyLab FPM layout", path)
    images = data["ptychogram"]
    if images.ndim != 3 or not np.issubdtype(images.dtype, np.number) or np.iscomplexobj(images):
        raise FPMInputError(f"ptychogram must be a real N x H x W stack, got shape {images.shape}", path)
    enc = np.asarray(data["encoder"], dtype=np.float64) if np.issubdtype(data["encoder"].dtype, np.number) \
        else np.zeros((0, 0))
    if enc.ndim == 2 and enc.shape[0] == 2 and enc.shape[1] != 2:
        enc = enc.T  # stored 2 x N, as PtyLab itself tolerates
    if enc.ndim != 2 or enc.shape[1] != 2:
        raise FPMInputError(f"encoder must be an N x 2 array of LED positions (m), got shape {enc.shape}", path)
    if images.shape[0] != enc.shape[0]:
        raise FPMInputError(
            f"ptychogram has {images.shape[0]} images but encoder lists {enc.shape[0]} LEDs", path)

    values = {}
    overrides = {"wavelength": wavelength_um, "dxd": pixel_um, "magnification": mag}
    for key in REQUIRED_SCALARS:
        if overrides.get(key) is None:
            values[key] = scalar(data, key, path)
    zled_m = values["zled"]
    if zled_m <= 0:
        raise FPMInputError(f"zled must be a positive distance in metres, got {zled_m}", path)
    na_file = scalar(data, "NA", path, required=False)
    if na_obj is None and na_file is None:
        raise MissingParameterError("objective NA ('NA')", "pass na_obj=... to read_raw", path)
    orientation = scalar(data, "orientation", path, required=False)
    images = _orient(images, int(orientation or 0), path)

    pupil = data.get("pupil")
    if pupil is not None and (pupil.ndim != 2 or not np.issubdtype(pupil.dtype, np.number)):
        raise FPMInputError(f"pupil must be a 2D complex array, got shape {pupil.shape}", path)
    r = np.sqrt(np.sum(enc**2, axis=1) + zled_m**2)
    na = np.stack([enc[:, 1] / r, enc[:, 0] / r], axis=1)
    meta = {"zled_m": zled_m, "orientation": int(orientation or 0)}
    if _text(data.get("acquisition")) == "simulated":
        meta["simulated"] = True
    return build_raw(
        path, images, fmt="ptylab",
        z_um=scalar(data, "z_um", path, required=False),
        meta=meta,
        wavelength_um=float(wavelength_um) if wavelength_um is not None else values["wavelength"] * 1e6,
        na_obj=float(na_obj) if na_obj is not None else na_file,
        mag=float(mag) if mag is not None else values["magnification"],
        pixel_um=float(pixel_um) if pixel_um is not None else values["dxd"] * 1e6,
        na_illum=na, upsample=int(upsample or scalar(data, "upsample", path, required=False) or 0),
        pupil=pupil,
    )
