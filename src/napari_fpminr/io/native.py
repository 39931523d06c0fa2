"""Reader for the native layout: a TIFF stack plus a JSON sidecar (DESIGN.md §2).

``data.tif`` holds ``N×H×W`` intensities (one page per LED); ``data.json`` beside it holds::

    {"wavelength_um": 0.522, "na_obj": 0.25, "mag": 10, "pixel_um": 3.45,
     "na_x": [...], "na_y": [...],            # either explicit illumination NAs ...
     "led_grid": {"grid_size": 15,            # ... or LED-board geometry (k or [rows, cols])
                  "pitch_mm": 4, "distance_mm": 90.88,
                  "centre_mm": [0, 0],        # offset of the first (spiral) / centre (raster) LED
                  "order": "spiral",          # or "raster" (row by row)
                  "rotation_deg": 0, "slab_thickness_mm": 0, "slab_index": 1.52},
     "z_um": 0.0, "upsample": 0,              # optional
     "acquisition": "measured",               # or "simulated" (written by fpminr simulate)
     "saturation_level": 255,                 # camera value at which pixels saturated (stored units)
     "dark_level": 2.0}                       # or "dark_frame": "data.dark.tif" (one frame, beside)

The ``led_grid`` keys may also sit at the top level. See
:func:`napari_fpminr.optics.led_array.led_grid_na` for the geometry (distance to the slab's
bottom face; the illumination NA includes the slab's refraction).

Camera levels (``fpminr import`` writes them; the stack then holds the raw camera values in
their own data type): with ``saturation_level``, ``RawData.valid`` is ``raw < saturation_level``
(computed on the stored values, before any subtraction); then the dark background
(``dark_level``, or the ``dark_frame`` TIFF of the stack's size and data type) is subtracted,
clipped at 0, and the intensities become float32. ``meta`` records ``acquisition``,
``saturation_level`` and ``dark_level`` (the dark frame's mean with ``dark_frame``); a file
marked ``"acquisition": "simulated"`` gets ``meta["simulated"] = True``. Files without the mark
are measurements. The complete schema is in the user guide ("Your own rig").
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FPMInputError, MissingParameterError
from ..optics.led_array import LEDArray
from ._common import build_raw, one_line
from .budget import check_memory
from ..rawdata import RawData

TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
GRID_KEYS = ("grid_size", "pitch_mm", "distance_mm")
#: an LED board side longer than this, or a sidecar larger than this, is not an FPM data set
MAX_GRID_SIDE = 1024
MAX_SIDECAR_BYTES = 64 << 20
_ARG_FOR = {"wavelength_um": "wavelength_um", "na_obj": "na_obj", "mag": "mag", "pixel_um": "pixel_um"}


def is_tiff(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) in TIFF_MAGICS
    except OSError:
        return False


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def tiff_complete(path: Path) -> bool:
    """True when the TIFF's page chain parses cleanly and all image data lies inside the file.

    tifffile stops silently (it only logs) at a page offset past the end of a truncated file, so
    its log records are watched while the pages are walked.
    """
    import tifffile

    logger = logging.getLogger("tifffile")
    watch = _Collect()
    logger.addHandler(watch)
    try:
        size = path.stat().st_size
        with tifffile.TiffFile(path) as tif:
            for series in tif.series:
                if series.dataoffset is not None and series.dataoffset + series.nbytes > size:
                    return False
            for page in tif.pages:
                ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts)]
                if not ends or max(ends) > size:
                    return False
        return not watch.records
    except Exception:
        return False
    finally:
        logger.removeHandler(watch)


def sidecar_path(path: Path) -> Path:
    """``<same stem>.json`` next to the TIFF."""
    return Path(path).with_suffix(".json")


def load_sidecar(tif_path: Path) -> dict[str, Any]:
    side = sidecar_path(tif_path)
    if not side.is_file():
        raise FPMInputError(f"JSON sidecar {side.name} not found next to the TIFF (native format needs "
                            "wavelength_um, na_obj, mag, pixel_um and na_x/na_y or led_grid)", tif_path)
    try:
        size = side.stat().st_size
    except OSError as exc:
        raise FPMInputError(f"cannot read the JSON sidecar: {one_line(exc)}", side) from None
    if size > MAX_SIDECAR_BYTES:
        raise FPMInputError(f"JSON sidecar is {size} bytes; a sidecar holds a few parameters (at most "
                            f"{MAX_SIDECAR_BYTES >> 20} MiB)", side)
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except RecursionError:
        raise FPMInputError("invalid JSON: nested too deeply", side) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FPMInputError(f"invalid JSON: {one_line(exc)}", side) from None
    if not isinstance(meta, dict):
        raise FPMInputError("JSON sidecar must hold an object {...}", side)
    return meta


def _number(meta: dict, key: str, side: Path) -> float:
    value = meta[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FPMInputError(f"'{key}' must be a finite number, got {value!r}", side)
    return float(value)


def _grid_size(value: Any, side: Path) -> int | tuple[int, int]:
    """``grid_size``: a whole number ``k`` or ``[rows, cols]``, each 1..``MAX_GRID_SIDE``."""
    items = value if isinstance(value, (list, tuple)) else [value]
    if len(items) not in (1, 2) or (isinstance(value, (list, tuple)) and len(items) != 2):
        raise FPMInputError(f"'grid_size' must be a number k or [rows, cols], got {value!r}", side)
    sides = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v != int(v) \
                or not 1 <= v <= MAX_GRID_SIDE:
            raise FPMInputError(f"'grid_size' must hold whole numbers from 1 to {MAX_GRID_SIDE}, got {value!r}", side)
        sides.append(int(v))
    return sides[0] if len(sides) == 1 else (sides[0], sides[1])


def sidecar_na(meta: dict[str, Any], side: Path) -> np.ndarray:
    """Illumination NAs from explicit ``na_x``/``na_y`` lists or from LED-grid geometry."""
    if "na_x" in meta or "na_y" in meta:
        if "na_x" not in meta or "na_y" not in meta:
            raise FPMInputError(f"missing key '{'na_y' if 'na_x' in meta else 'na_x'}' (na_x and na_y go together)",
                                side)
        try:
            na_x = np.asarray(meta["na_x"], dtype=np.float64)
            na_y = np.asarray(meta["na_y"], dtype=np.float64)
        except (TypeError, ValueError):
            raise FPMInputError("na_x and na_y must be lists of numbers", side) from None
        if na_x.ndim != 1 or na_x.shape != na_y.shape:
            raise FPMInputError(f"na_x and na_y must be lists of equal length, got {na_x.shape} and {na_y.shape}",
                                side)
        return np.stack([na_x, na_y], axis=1)
    leds = sidecar_leds(meta, side)
    if leds is None:
        raise FPMInputError("missing key 'grid_size': give na_x/na_y lists or led_grid with "
                            "grid_size, pitch_mm, distance_mm", side)
    return leds.na_at()


def sidecar_leds(meta: dict[str, Any], side: Path) -> LEDArray | None:
    """The LED board's geometry: ``led_grid`` (also as top-level keys), else ``led_array`` (explicit
    offsets, as written for simulations), or ``None`` when the sidecar gives NAs only."""
    if "led_array" in meta and "led_grid" not in meta:
        try:
            return LEDArray.from_dict(meta["led_array"])
        except ValueError as exc:
            raise FPMInputError(f"invalid led_array: {one_line(exc)}", side) from None
    grid = meta.get("led_grid")
    if grid is None:
        if not any(k in meta for k in GRID_KEYS):
            return None
        grid = meta
    if not isinstance(grid, dict):
        raise FPMInputError("'led_grid' must be an object", side)
    missing = [k for k in GRID_KEYS if k not in grid]
    if missing:
        raise FPMInputError(f"missing key '{missing[0]}': give na_x/na_y lists or led_grid with "
                            "grid_size, pitch_mm, distance_mm", side)
    try:
        return LEDArray.grid(
            _grid_size(grid["grid_size"], side), _number(grid, "pitch_mm", side), _number(grid, "distance_mm", side),
            centre_mm=tuple(float(v) for v in grid.get("centre_mm", (0.0, 0.0))),
            order=str(grid.get("order", "raster")),
            rotation_deg=float(grid.get("rotation_deg", 0.0)),
            slab_thickness_mm=float(grid.get("slab_thickness_mm", 0.0)),
            slab_index=float(grid.get("slab_index", 1.0)),
        )
    except (TypeError, ValueError, OverflowError) as exc:
        raise FPMInputError(f"invalid led_grid: {one_line(exc)}", side) from None


def read_native(path: Path, *, wavelength_um=None, na_obj=None, mag=None, pixel_um=None,
                upsample: int = 0) -> RawData:
    """Read a native TIFF + JSON data set; keyword arguments fill or replace parameters."""
    import tifffile

    path = Path(path)
    meta = load_sidecar(path)
    side = sidecar_path(path)
    given = {"wavelength_um": wavelength_um, "na_obj": na_obj, "mag": mag, "pixel_um": pixel_um}
    params = {}
    for key, value in given.items():
        if value is not None:
            params[key] = float(value)
        elif key in meta:
            params[key] = _number(meta, key, side)
        else:
            raise MissingParameterError(f"'{key}'", f"add it to {side.name} or pass {_ARG_FOR[key]}=...", path)
    na = sidecar_na(meta, side)
    leds = sidecar_leds(meta, side)
    if leds is not None and leds.n_leds != na.shape[0]:
        raise FPMInputError(f"{side.name} gives {na.shape[0]} LED NAs but an LED array of {leds.n_leds}", side)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            check_memory(int(np.prod(series.shape, dtype=np.float64)) * (series.dtype.itemsize + 5),
                         f"reading the TIFF stack (shape {tuple(series.shape)})", path)
            images = series.asarray()
    except FPMInputError:
        raise
    except MemoryError:
        raise FPMInputError("not enough memory to read the TIFF stack", path) from None
    except Exception as exc:
        raise FPMInputError(f"cannot read TIFF (truncated or corrupt?): {one_line(exc)}", path) from None
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3:
        raise FPMInputError(f"TIFF must hold an N x H x W stack, got shape {images.shape}", path)
    if images.shape[0] != na.shape[0]:
        raise FPMInputError(f"TIFF has {images.shape[0]} images but {side.name} lists {na.shape[0]} LEDs", path)
    z_um = _number(meta, "z_um", side) if meta.get("z_um") is not None else None
    up = int(upsample) or (int(_number(meta, "upsample", side)) if meta.get("upsample") else 0)
    levels = camera_levels(meta, side, images.shape[1:], images.dtype)
    intensities, valid = apply_camera_levels(images, levels)
    raw = build_raw(path, intensities, fmt="native", z_um=z_um, meta={"sidecar": side.name, **levels.meta()},
                    na_illum=na, upsample=up, leds=leds, **params)
    return raw if valid is None else replace(raw, valid=valid)


ACQUISITIONS = ("measured", "simulated")


@dataclass(frozen=True)
class CameraLevels:
    """The sidecar's camera keys: acquisition kind, saturation level and dark background."""

    acquisition: str | None = None
    saturation_level: float | None = None
    dark_level: float | None = None
    dark_frame: np.ndarray | None = None
    dark_name: str | None = None

    def window(self, top: int, left: int, height: int, width: int) -> "CameraLevels":
        """The same levels for a window of the images (the dark frame cropped to it)."""
        if self.dark_frame is None:
            return self
        return replace(self, dark_frame=self.dark_frame[top:top + height, left:left + width])

    def meta(self) -> dict[str, Any]:
        """What ``RawData.meta`` records (JSON-safe); the dark frame by name and mean level."""
        out: dict[str, Any] = {}
        if self.acquisition is not None:
            out["acquisition"] = self.acquisition
            if self.acquisition == "simulated":
                out["simulated"] = True
        if self.saturation_level is not None:
            out["saturation_level"] = self.saturation_level
        if self.dark_frame is not None:
            out["dark_frame"] = self.dark_name
            out["dark_level"] = float(self.dark_frame.mean(dtype=np.float64))
        elif self.dark_level is not None:
            out["dark_level"] = self.dark_level
        return out


def _acquisition(meta: dict, side: Path) -> str | None:
    value = meta.get("acquisition")
    if value is not None and value not in ACQUISITIONS:
        raise FPMInputError(f"'acquisition' must be \"measured\" or \"simulated\", got {value!r}", side)
    return value


def camera_levels(meta: dict[str, Any], side: Path, frame_shape: tuple[int, ...], dtype) -> CameraLevels:
    """Validate the sidecar's ``acquisition``, ``saturation_level``, ``dark_level``/``dark_frame``
    for a stack of ``frame_shape`` (rows, cols) images of data type ``dtype``."""
    level = dark = None
    if meta.get("saturation_level") is not None:
        level = _number(meta, "saturation_level", side)
        if level <= 0:
            raise FPMInputError(f"'saturation_level' must be positive, got {level:g}", side)
    if meta.get("dark_level") is not None and meta.get("dark_frame") is not None:
        raise FPMInputError("give 'dark_level' or 'dark_frame', not both", side)
    if meta.get("dark_level") is not None:
        dark = _number(meta, "dark_level", side)
        if dark < 0 or (level is not None and dark >= level):
            raise FPMInputError(f"'dark_level' must be >= 0 and below the saturation level, got {dark:g}", side)
    frame, name = (None, None) if meta.get("dark_frame") is None else \
        _dark_frame(meta["dark_frame"], side, tuple(frame_shape), np.dtype(dtype))
    return CameraLevels(_acquisition(meta, side), level, dark, frame, name)


def _dark_frame(name: Any, side: Path, frame_shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, str]:
    """The ``dark_frame`` TIFF: a file name beside the sidecar, one frame of the stack's size and type."""
    import tifffile

    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise FPMInputError(f"'dark_frame' must be a file name beside the sidecar, got {name!r}", side)
    path = side.with_name(name)
    if not path.is_file():
        raise FPMInputError(f"dark frame {name} not found next to the sidecar", side)
    try:
        with tifffile.TiffFile(path) as tif:
            if len(tif.pages) != 1:
                raise FPMInputError(f"the dark frame holds {len(tif.pages)} images; one expected", path)
            page = tif.pages[0]
            check_memory(int(np.prod(page.shape, dtype=np.float64)) * page.dtype.itemsize, "reading the dark frame", path)
            frame = np.asarray(page.asarray())
    except FPMInputError:
        raise
    except Exception as exc:
        raise FPMInputError(f"cannot read the dark frame (truncated or corrupt?): {one_line(exc)}", path) from None
    if frame.shape != frame_shape or frame.dtype != dtype:
        raise FPMInputError(f"dark frame is {frame.shape} {frame.dtype} but the stack's images are "
                            f"{frame_shape} {dtype}", path)
    if frame.dtype.kind == "f" and not (np.all(np.isfinite(frame)) and frame.min() >= 0):
        raise FPMInputError("dark frame holds NaN, infinite or negative values", path)
    return frame, name


def apply_camera_levels(images: np.ndarray, levels: CameraLevels) -> tuple[np.ndarray, np.ndarray | None]:
    """``(float32 intensities, valid mask or None)``: saturated pixels marked on the raw values,
    then the dark background subtracted and clipped at 0 (raw camera units stay the scale)."""
    valid = None
    if levels.saturation_level is not None:
        valid = images < levels.saturation_level
    dark = levels.dark_frame if levels.dark_frame is not None else levels.dark_level
    if dark is None:
        return images, valid
    out = images.astype(np.float32)
    out -= np.asarray(dark, dtype=np.float32)
    np.maximum(out, 0, out=out)
    return out, valid
