"""Reader for the FPM-INR (Caltech) ``.mat`` layout, MATLAB v5 or v7.3 (DESIGN.md §2).

Variables (MATLAB axis order):

* ``I_low``    H×W×N raw intensities, one image per LED;
* ``na_calib`` N×2 illumination NA ``(na_x, na_y)`` per LED (same order as ``I_low``);
* ``na_cal``   objective NA; ``mag`` magnification; ``dpix_c`` camera pixel (µm);
* ``lambda``   wavelength (µm), optional: the reference data omit it, the user must pass it.

napari-fpminr's writer adds optional variables that the reader understands and other
readers ignore: ``z_um`` (known sample defocus, µm), ``upsample``, ``pupil`` (complex h×w,
rows = y, columns = x) and ``simulated`` (1 for data made by ``fpminr simulate``; files
without it are measurements).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import FPMInputError, MissingParameterError
from ._common import build_raw, check_led_count, load_mat, require_keys, scalar, stack_from_matlab
from ..rawdata import RawData

KEYS = ("I_low", "na_calib")
OPTIONAL = ("na_cal", "mag", "dpix_c", "lambda", "z_um", "upsample", "pupil", "simulated")
WAVELENGTH_HINT = ("pass --wavelength-um (or wavelength_um=...) (reference data: r 0.632, g 0.5126, "
                   "b 0.471)")
_HOW = {
    "na_cal": "pass na_obj=... (objective NA)",
    "mag": "pass mag=... (total magnification)",
    "dpix_c": "pass pixel_um=... (camera pixel in um)",
}
_OVERRIDE = {"na_cal": "na_obj", "mag": "mag", "dpix_c": "pixel_um"}


def read_fpminr_mat(path: Path, *, wavelength_um=None, na_obj=None, mag=None, pixel_um=None,
                    upsample: int = 0) -> RawData:
    """Read an FPM-INR ``.mat`` file (v5 or v7.3); keyword arguments fill or replace parameters."""
    path = Path(path)
    data = load_mat(path, list(KEYS + OPTIONAL), large=("I_low",))
    require_keys(data, KEYS, "variable", "FPM-INR layout", path)
    images = stack_from_matlab(data["I_low"], "I_low", path)
    na = np.asarray(data["na_calib"])
    if na.ndim != 2 or na.shape[1] != 2 or not np.issubdtype(na.dtype, np.number) or np.iscomplexobj(na):
        raise FPMInputError(f"na_calib must be a real N x 2 array (na_x, na_y), got shape {na.shape}", path)
    check_led_count(images.shape[0], na.shape[0], "I_low", "na_calib", path)

    given = {"na_obj": na_obj, "mag": mag, "pixel_um": pixel_um}
    params = {}
    for key, name in _OVERRIDE.items():
        value = given[name] if given[name] is not None else scalar(data, key, path, required=False)
        if value is None:
            raise MissingParameterError(f"'{key}'", _HOW[key], path)
        params[name] = float(value)
    wl = wavelength_um if wavelength_um is not None else scalar(data, "lambda", path, required=False)
    if wl is None:
        raise MissingParameterError("wavelength", WAVELENGTH_HINT, path)
    if not upsample:
        stored = scalar(data, "upsample", path, required=False)
        upsample = int(stored) if stored else 0
    pupil = data.get("pupil")
    if pupil is not None:
        pupil = np.asarray(pupil)
        if pupil.ndim != 2 or pupil.size <= 1:
            pupil = None
    z_um = scalar(data, "z_um", path, required=False)
    meta = {"wavelength_from_file": wavelength_um is None}
    if scalar(data, "simulated", path, required=False) == 1:
        meta["simulated"] = True
    return build_raw(path, images, fmt="fpminr_mat", z_um=z_um, meta=meta,
                     wavelength_um=float(wl), na_illum=na, upsample=int(upsample), pupil=pupil, **params)
