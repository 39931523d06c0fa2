"""Reader for the UConn / Zheng-lab FPM ``.mat`` files (DESIGN.md §2, shared/data/README.md).

Variables: ``imlow_HDR`` H×W×N low-resolution **amplitudes** (squared here to intensities),
``wlength`` (m), ``z`` known sample defocus (m, same sign as DESIGN.md), ``xint``/``yint`` offset
(mm) of the first, central LED from the patch centre, ``theta`` board rotation (deg),
``aberration`` complex calibrated pupil (rows = ky, columns = kx, as MATLAB's
``meshgrid(kx, ky)`` builds it; centred like ``fftshift``) or the scalar 0.

The system is not stored in the files (UConn set-up): objective NA 0.1, object-side pixel
1.845 µm (mag 1), LEDs of a 4 mm pitch board 90.88 mm below a 1 mm glass slide (n = 1.52),
15×15 LEDs lit in a spiral out from the centre. The illumination NAs include the slide's
refraction (:func:`napari_fpminr.optics.led_array.led_grid_na`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import FPMInputError
from ..optics.led_array import LEDArray
from ._common import build_raw, load_mat, require_keys, scalar, stack_from_matlab
from ..rawdata import RawData

KEYS = ("imlow_HDR", "wlength")
OPTIONAL = ("z", "xint", "yint", "theta", "aberration")

NA_OBJ = 0.1
PIXEL_UM = 1.845
MAG = 1.0
LED_PITCH_MM = 4.0
LED_DISTANCE_MM = 90.88
SLAB_THICKNESS_MM = 1.0
SLAB_INDEX = 1.52


def uconn_leds(n_leds: int, xint_mm: float, yint_mm: float, theta_deg: float) -> LEDArray:
    """The first ``n_leds`` LEDs of the UConn spiral board (geometry, acquisition order)."""
    side = int(math.ceil(math.sqrt(n_leds)))
    side += 1 - side % 2  # odd square that contains the spiral
    board = LEDArray.grid(side, LED_PITCH_MM, LED_DISTANCE_MM, order="spiral", centre_mm=(xint_mm, yint_mm),
                          rotation_deg=theta_deg, slab_thickness_mm=SLAB_THICKNESS_MM, slab_index=SLAB_INDEX)
    return board.select(np.arange(n_leds))


def uconn_na(n_leds: int, xint_mm: float, yint_mm: float, theta_deg: float) -> np.ndarray:
    """``(N, 2)`` illumination NA of the first ``n_leds`` LEDs of the UConn spiral (field centre)."""
    return uconn_leds(n_leds, xint_mm, yint_mm, theta_deg).na_at()


def read_uconn(path: Path, *, wavelength_um=None, na_obj=None, mag=None, pixel_um=None,
               upsample: int = 0) -> RawData:
    """Read a UConn ``.mat`` file; keyword arguments replace the set-up's constants."""
    path = Path(path)
    data = load_mat(path, list(KEYS + OPTIONAL), large=("imlow_HDR",))
    require_keys(data, KEYS, "variable", "UConn layout", path)
    amplitudes = stack_from_matlab(data["imlow_HDR"], "imlow_HDR", path).astype(np.float32)
    if not np.all(np.isfinite(amplitudes)):
        bad = int(np.count_nonzero(~np.isfinite(amplitudes)))
        raise FPMInputError(f"imlow_HDR contains {bad} NaN or infinite values", path)
    wl_m = scalar(data, "wlength", path)
    z_m = scalar(data, "z", path, required=False)
    xint = scalar(data, "xint", path, required=False) or 0.0
    yint = scalar(data, "yint", path, required=False) or 0.0
    theta = scalar(data, "theta", path, required=False) or 0.0

    pupil = None
    if "aberration" in data:
        ab = np.asarray(data["aberration"])
        if ab.ndim == 2 and ab.size > 1 and np.any(ab != 0):
            pupil = ab.astype(np.complex64)
    leds = uconn_leds(amplitudes.shape[0], xint, yint, theta)
    return build_raw(
        path, np.square(amplitudes), fmt="uconn",
        z_um=None if z_m is None else z_m * 1e6,
        meta={"xint_mm": xint, "yint_mm": yint, "theta_deg": theta},
        wavelength_um=float(wavelength_um) if wavelength_um is not None else wl_m * 1e6,
        na_obj=float(na_obj) if na_obj is not None else NA_OBJ,
        mag=float(mag) if mag is not None else MAG,
        pixel_um=float(pixel_um) if pixel_um is not None else PIXEL_UM,
        na_illum=leds.na_at(), upsample=int(upsample), pupil=pupil, leds=leds,
    )
