"""``*.calib.json``: an illumination calibration on disk (:class:`~napari_fpminr.calib.Calibration`).

A UTF-8 JSON object written atomically: ``format`` ``"fpminr-calibration"``, ``version``, the
fitted model (kind, shift, rotation, height scale, per-LED brightness, background, optional
per-LED NAs), ``fallback`` and ``report`` (misfits before/after, settings). Bad content is one
:class:`~napari_fpminr.errors.FPMInputError` line naming the file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..calib.model import Calibration
from ..errors import FPMInputError
from .atomic import atomic_write
from .safety import writing

__all__ = ["CALIBRATION_SUFFIX", "default_calibration_path", "read_calibration", "write_calibration"]

CALIBRATION_SUFFIX = ".calib.json"
FORMAT_NAME = "fpminr-calibration"
_MAX_BYTES = 64 << 20


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
        return Calibration.from_dict({k: v for k, v in doc.items() if k != "format"})
    except (ValueError, TypeError, RecursionError) as exc:
        raise FPMInputError(f"bad calibration: {' '.join(str(exc).split())}", path) from None
