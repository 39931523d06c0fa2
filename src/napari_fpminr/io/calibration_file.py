"""``*.calib.json``: an illumination calibration on disk (:class:`~napari_fpminr.calib.Calibration`).

A UTF-8 JSON object written atomically: ``format`` ``"fpminr-calibration"``, ``version``, the
fitted model (kind, shift, rotation, height scale, per-LED brightness, background, optional
per-LED NAs), ``fallback`` and ``report`` (misfits before/after, settings, and ``data``: the
fingerprint of the data it was fitted on, :func:`data_fingerprint`). Bad content is one
:class:`~napari_fpminr.errors.FPMInputError` line naming the file: every number is checked to be
finite and within a physical range (:data:`RANGES`), so an edited or damaged file cannot push
absurd illumination angles, brightness or background into a reconstruction.

A calibration belongs to one data set: :func:`check_data` refuses to apply it to data whose
fingerprint (LED count, frame size, sha256 of three whole frames of the un-cropped file) differs.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Callable

import numpy as np

from ..calib.model import Calibration
from ..errors import FPMInputError
from .atomic import atomic_write
from .safety import writing

__all__ = ["CALIBRATION_SUFFIX", "default_calibration_path", "read_calibration", "write_calibration",
           "data_fingerprint", "check_data", "RANGES"]

CALIBRATION_SUFFIX = ".calib.json"
FORMAT_NAME = "fpminr-calibration"
_MAX_BYTES = 64 << 20
MAX_LEDS = 100_000
#: allowed ranges (inclusive) of a calibration's numbers: far beyond any real setup, short of absurd
RANGES = {"shift_mm": (-100.0, 100.0), "shift_na": (-1.0, 1.0), "rotation_deg": (-360.0, 360.0),
          "height_scale": (0.1, 10.0), "brightness": (1e-3, 1e3), "background": (0.0, 1e12)}


def default_calibration_path(raw_path: str | Path) -> Path:
    """``RAW.calib.json`` beside the raw file (``data.mat`` -> ``data.calib.json``)."""
    raw_path = Path(raw_path)
    return raw_path.with_name(raw_path.stem + CALIBRATION_SUFFIX)


def _finite_json(value):
    """Refuse NaN/Infinity (not JSON) anywhere in the document."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("contains a non-finite number")
    if isinstance(value, dict):
        for v in value.values():
            _finite_json(v)
    elif isinstance(value, list):
        for v in value:
            _finite_json(v)


def write_calibration(cal: Calibration, path: str | Path) -> Path:
    """Write ``cal`` to ``path`` atomically (an existing file is replaced only on success)."""
    path = Path(path)
    doc = {"format": FORMAT_NAME, **cal.to_dict()}
    text = json.dumps(doc, indent=1, allow_nan=False, default=_default)
    with writing(path), atomic_write(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return path


def _default(value):
    try:
        import numpy as np
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def read_calibration(path: str | Path) -> Calibration:
    """Read a calibration file; one-line ``FPMInputError`` naming ``path`` on any problem."""
    path = Path(path)
    try:
        if path.stat().st_size > _MAX_BYTES:
            raise FPMInputError(f"is too large for a calibration file (over {_MAX_BYTES >> 20} MiB)", path)
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FPMInputError("calibration file not found", path) from None
    except IsADirectoryError:
        raise FPMInputError("is a folder, not a calibration file", path) from None
    except UnicodeDecodeError:
        raise FPMInputError("is not a calibration file (not UTF-8 text)", path) from None
    except OSError as exc:
        raise FPMInputError(f"cannot read: {exc.strerror or exc}", path) from None
    try:
        doc = json.loads(text, parse_constant=lambda c: float("nan"))
    except (json.JSONDecodeError, RecursionError) as exc:
        where = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise FPMInputError(f"is not a calibration file: invalid JSON{where}", path) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise FPMInputError(f"is not a calibration file (no \"format\": \"{FORMAT_NAME}\")", path)
    try:
        _finite_json(doc)
        _check_led_count(doc.get("n_leds"))
        cal = Calibration.from_dict({k: v for k, v in doc.items() if k != "format"})
        _check_ranges(cal)
        _check_fingerprint_entry(cal.report.get("data"))
    except (ValueError, TypeError, RecursionError, OverflowError) as exc:
        raise FPMInputError(f"bad calibration: {' '.join(str(exc).split())}", path) from None
    return cal


def _check_led_count(n) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_LEDS:
        raise ValueError(f"'n_leds' must be a whole number from 1 to {MAX_LEDS}, got {str(n)[:40]}")


def _check_ranges(cal: Calibration) -> None:
    """Every number of ``cal`` within :data:`RANGES`; per-LED NAs below 1 (``ValueError`` otherwise)."""
    values = {"shift_mm": cal.shift_mm, "shift_na": cal.shift_na, "rotation_deg": [cal.rotation_deg],
              "height_scale": [cal.height_scale], "brightness": cal.brightness, "background": [cal.background]}
    for name, (lo, hi) in RANGES.items():
        v = np.asarray(values[name], np.float64)
        if not (np.all(np.isfinite(v)) and np.all(v >= lo) and np.all(v <= hi)):
            bad = v[~((v >= lo) & (v <= hi))]
            raise ValueError(f"'{name}' {bad[0] if bad.size else v[0]:g} is outside {lo:g}..{hi:g}")
    if cal.na_illum is not None and not np.all(np.hypot(cal.na_illum[:, 0], cal.na_illum[:, 1]) < 1.0):
        raise ValueError("'na_illum' holds an illumination NA of 1 or more")


# ---- which data a calibration belongs to -----------------------------------------------------
def fingerprint_leds(n_leds: int) -> list[int]:
    """The LEDs whose whole frames the fingerprint hashes: first, middle, last."""
    return sorted({0, n_leds // 2, n_leds - 1})


def data_fingerprint(n_leds: int, frame_shape, read_frames: Callable[[list[int]], np.ndarray]) -> dict:
    """``{"n_leds", "frame_shape", "leds", "sha256"}`` of un-cropped data (``read_frames(leds)``:
    those LEDs' whole frames as float32)."""
    leds = fingerprint_leds(int(n_leds))
    frames = np.ascontiguousarray(read_frames(leds), dtype=np.float32)
    return {"n_leds": int(n_leds), "frame_shape": [int(v) for v in frame_shape], "leds": leds,
            "sha256": hashlib.sha256(frames.tobytes()).hexdigest()}


def _check_fingerprint_entry(fp) -> None:
    if fp is None:
        return
    ok = (isinstance(fp, dict) and isinstance(fp.get("sha256"), str) and len(fp["sha256"]) == 64
          and isinstance(fp.get("frame_shape"), list) and len(fp["frame_shape"]) == 2
          and all(isinstance(v, int) and 0 < v <= 1 << 24 for v in fp["frame_shape"]))
    if not ok:
        raise ValueError("'report.data' (the fingerprint of the calibrated data) is malformed")


def check_data(cal: Calibration, fingerprint: Callable[[], dict], path, force: bool = False) -> None:
    """Refuse (one line) a calibration made for other data; ``force``: a warning instead.

    ``fingerprint()`` computes the data's :func:`data_fingerprint` (called only when the file has one).
    """
    import warnings

    recorded = cal.report.get("data")
    if recorded is None:
        warnings.warn(f"{path}: the calibration records no fingerprint of its data (an older file): not "
                      "checked against these data", stacklevel=2)
        return
    here = fingerprint()
    if here == {k: recorded.get(k) for k in here}:
        return
    if recorded.get("frame_shape") != here["frame_shape"]:
        what = f"its frames are {recorded.get('frame_shape')} px, these data's {here['frame_shape']} px"
    else:
        what = "the content of its frames differs"
    message = (f"this calibration was made for other data ({what}); calibrate these data (fpminr calibrate) "
               "or pass --force-calibration")
    if force:
        warnings.warn(f"{path}: {message.split(';')[0]}: applied anyway (--force-calibration)", stacklevel=2)
        return
    raise FPMInputError(message, path)
