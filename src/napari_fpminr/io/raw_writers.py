"""Write :class:`RawData` in the raw formats napari-fpminr reads (DESIGN.md §2).

By suffix: ``.mat`` -> FPM-INR MATLAB v5 layout (``I_low`` H×W×N, ``na_calib``, ``na_cal``,
``mag``, ``dpix_c``, ``lambda``); ``.hdf5``/``.h5`` -> PtyLab FPM layout; ``.tif``/``.tiff`` ->
native TIFF stack plus ``<stem>.json`` sidecar listing ``na_x``/``na_y``. Every file is written
atomically (temporary sibling + ``os.replace``).

Beyond each format's own keys the writers store, where the layout allows, ``z_um`` (the known
defocus), ``upsample`` and (``.mat`` and ``.hdf5``) the complex ``pupil``; the readers restore
them, other software ignores them. Data made by ``fpminr simulate`` (``raw.is_simulated``) are
marked so that readers can tell them from measurements: ``"acquisition": "simulated"`` in the
native sidecar (``"measured"`` otherwise) and in the PtyLab file, a variable ``simulated = 1``
in the ``.mat`` file (MATLAB v5 numbers only; absent for measurements).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import FPMInputError
from .atomic import atomic_write
from .safety import writing
from ..rawdata import RawData

_SUFFIX_FORMAT = {".mat": "fpminr_mat", ".hdf5": "ptylab", ".h5": "ptylab", ".tif": "native", ".tiff": "native"}
DEFAULT_ZLED_M = 0.1  # PtyLab needs an LED distance; any value encodes the NAs exactly


def write_fpminr_mat(raw: RawData, path: Path) -> None:
    import scipy.io

    o = raw.optics
    data = {
        "I_low": np.ascontiguousarray(np.moveaxis(raw.intensities, 0, -1)),  # H x W x N
        "na_calib": o.na_illum.astype(np.float64),
        "na_cal": o.na_obj, "mag": o.mag, "dpix_c": o.pixel_um, "lambda": o.wavelength_um,
        "upsample": float(o.upsample),
    }
    if raw.z_um is not None:
        data["z_um"] = float(raw.z_um)
    if o.pupil is not None:
        data["pupil"] = o.pupil
    if raw.is_simulated:
        data["simulated"] = 1.0
    with atomic_write(path) as tmp:
        scipy.io.savemat(tmp, data, appendmat=False, format="5", do_compression=False, oned_as="column")


def write_ptylab(raw: RawData, path: Path) -> None:
    import h5py

    o = raw.optics
    na = o.na_illum
    zled_m = float(raw.meta.get("zled_m", DEFAULT_ZLED_M))
    scale = zled_m / np.sqrt(1.0 - np.sum(na**2, axis=1))
    encoder = np.stack([na[:, 1] * scale, na[:, 0] * scale], axis=1)  # (y, x) row/col order, metres
    with atomic_write(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f["ptychogram"] = raw.intensities
            f["encoder"] = encoder
            f["zled"] = zled_m
            f["dxd"] = o.pixel_um * 1e-6
            f["magnification"] = o.mag
            f["NA"] = o.na_obj
            f["wavelength"] = o.wavelength_um * 1e-6
            f["orientation"] = 0
            f["upsample"] = o.upsample
            if raw.is_simulated:
                f["acquisition"] = "simulated"
            if raw.z_um is not None:
                f["z_um"] = float(raw.z_um)
            if o.pupil is not None:
                f["pupil"] = o.pupil


def write_native(raw: RawData, path: Path) -> None:
    import tifffile

    o = raw.optics
    meta = {
        "format": "napari-fpminr native raw data", "version": 1,
        "wavelength_um": o.wavelength_um, "na_obj": o.na_obj, "mag": o.mag, "pixel_um": o.pixel_um,
        "upsample": o.upsample, "z_um": raw.z_um,
        "acquisition": "simulated" if raw.is_simulated else "measured",
        "na_x": o.na_illum[:, 0].tolist(), "na_y": o.na_illum[:, 1].tolist(),
    }
    if raw.leds is not None:
        meta["led_array"] = raw.leds.to_dict()
    if o.pupil is not None:
        meta["note"] = "the calibrated pupil is not stored in the native format"
    side = path.with_suffix(".json")
    with atomic_write(side) as tmp_json, atomic_write(path) as tmp_tif:
        tifffile.imwrite(tmp_tif, raw.intensities, photometric="minisblack")
        tmp_json.write_text(json.dumps(meta, indent=1), encoding="utf-8")


_WRITERS = {"fpminr_mat": write_fpminr_mat, "ptylab": write_ptylab, "native": write_native}


def write_raw(raw: RawData, path, fmt: str | None = None) -> Path:
    """Write ``raw`` to ``path`` (format from ``fmt`` or the suffix); returns the path written."""
    path = Path(path)
    if fmt is None:
        fmt = _SUFFIX_FORMAT.get(path.suffix.lower())
        if fmt is None:
            raise FPMInputError(f"cannot tell the raw format from suffix '{path.suffix}' "
                                "(use .mat, .hdf5/.h5 or .tif/.tiff)", path)
    if fmt not in _WRITERS:
        raise FPMInputError(f"unknown raw format {fmt!r} (choose from {', '.join(_WRITERS)})", path)
    if not path.parent.is_dir():
        raise FPMInputError("folder does not exist", path.parent)
    with writing(path):
        _WRITERS[fmt](raw, path)
    return path
