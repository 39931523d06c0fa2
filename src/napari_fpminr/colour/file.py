"""Colour model files (``.fpminr``): three channel models and their registration in one safetensors file.

Layout, format version 2 (never pickle; the same safetensors + JSON as single models,
:mod:`napari_fpminr.io.model_file`): each channel's tensors under ``red/``, ``green/``, ``blue/``
(the keys a single-channel file has), and one metadata entry ``"fpminr"`` holding JSON:

    {"format": "fpminr-colour-model", "format_version": 2,
     "channels": [<single-model header: representation, optics, lr_shape, architecture, z range, meta>] x 3,
     "registration": [{"wavelength_um", "focus_um", "z_offset_um", "shift_px": [dy, dx], "white"}] x 3,
     "meta": {...}}

Version 2 is version 1 with the channels' low-rank tensors as in single model files of format
version 3 (the weakest terms of a compacted channel may use the 16-bit log-polar code, named by
``coarse_terms`` in the channel's architecture); version 1 files (every term float16) still load.
Every defect raises :class:`FPMInputError` naming the file; writes are atomic.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import FPMInputError
from ..io.model_file import COLOUR_FORMAT, STACK_PLANES, _first_line, model_from_file, model_header, \
    model_tensors, write_tensor_file
from .model import CHANNELS, ChannelRegistration, ColourModel

__all__ = ["COLOUR_FORMAT", "COLOUR_FORMAT_VERSION", "colour_model_info", "is_colour_model", "load_colour_model",
           "save_colour_model"]

COLOUR_FORMAT_VERSION = 2
READABLE_COLOUR_VERSIONS = (1, 2)


def save_colour_model(model: ColourModel, path: str | Path) -> Path:
    """Write ``model`` to ``path`` atomically; returns the path."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for name, m in zip(CHANNELS, model.channels, strict=True):
        tensors.update({f"{name}/{k}": v for k, v in model_tensors(m, path).items()})
    header = {"format": COLOUR_FORMAT, "format_version": COLOUR_FORMAT_VERSION,
              "channels": [model_header(m) for m in model.channels],
              "registration": [r.to_dict() for r in model.registration], "meta": model.meta}
    return write_tensor_file(tensors, header, path, "colour model")


def _raw_header(path: Path) -> dict | None:
    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get("fpminr")
        header = json.loads(text) if text else None
    except Exception:  # noqa: BLE001 - anything unreadable is "not a colour model"
        return None
    return header if isinstance(header, dict) else None


def is_colour_model(path: str | Path) -> bool:
    """True when ``path`` is a colour model file (never raises)."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() != ".fpminr":
        return False
    header = _raw_header(path)
    return header is not None and header.get("format") == COLOUR_FORMAT


def read_colour_header(path: str | Path) -> dict:
    """The validated JSON of a colour model file."""
    path = Path(path)
    if not path.is_file():
        raise FPMInputError("model file not found", path)
    header = _raw_header(path)
    if header is None or header.get("format") != COLOUR_FORMAT:
        raise FPMInputError("not a colour model file", path)
    version = header.get("format_version")
    if version not in READABLE_COLOUR_VERSIONS:
        raise FPMInputError(f"unsupported colour model format version {version!r} (this program reads versions "
                            f"{', '.join(map(str, READABLE_COLOUR_VERSIONS))})", path)
    channels, regs = header.get("channels"), header.get("registration")
    if not (isinstance(channels, list) and isinstance(regs, list) and len(channels) == 3 and len(regs) == 3
            and all(isinstance(c, dict) for c in channels + regs)):
        raise FPMInputError("colour model metadata must hold three channels and three registrations", path)
    if version == 1 and any(isinstance(c.get("architecture"), dict) and c["architecture"].get("coarse_terms")
                            for c in channels):
        raise FPMInputError("colour format version 1 stores every low-rank term as float16, but a channel's "
                            "metadata names log-polar terms (coarse_terms)", path)
    return header


def load_colour_model(path: str | Path, device: str | torch.device = "cpu") -> ColourModel:
    """Read a colour model file (safetensors + JSON only)."""
    path = Path(path)
    header = read_colour_header(path)
    try:
        regs = tuple(ChannelRegistration.from_dict(r) for r in header["registration"])
    except (KeyError, TypeError, ValueError) as exc:
        raise FPMInputError(f"bad colour registration: {_first_line(exc)}", path) from None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            channels = tuple(model_from_file(f, h, path, key_prefix=f"{name}/")
                             for name, h in zip(CHANNELS, header["channels"], strict=True))
    except FPMInputError:
        raise
    except Exception as exc:  # truncated data section, bad offsets, ...
        raise FPMInputError(f"corrupt or truncated colour model file ({_first_line(exc)})", path) from None
    meta = header.get("meta") if isinstance(header.get("meta"), dict) else {}
    try:
        model = ColourModel(channels, regs, dict(meta))
    except ValueError as exc:
        raise FPMInputError(f"inconsistent colour model: {_first_line(exc)}", path) from None
    model.meta.setdefault("file", str(path))
    return model.to(device)


def colour_stack_bytes(model: ColourModel, n_planes: int = STACK_PLANES) -> int:
    """Bytes of the float32 RGB stack (3 channels) of ``model``'s grid at ``n_planes`` planes."""
    H, W = model.hr_shape
    return int(n_planes) * 3 * H * W * 4


def colour_model_info(path: str | Path) -> str:
    """Text for ``fpminr info COLOUR_MODEL``: channels, registration, size and compression."""
    path = Path(path)
    version = read_colour_header(path).get("format_version")
    model = load_colour_model(path)
    size = path.stat().st_size
    stack = colour_stack_bytes(model)
    lines = [f"colour FPM-INR model {path.name} (colour format version {version})", model.summary(),
             f"file size      {size / 1e6:.3f} MB; a {STACK_PLANES}-plane float32 RGB stack of the same grid is "
             f"{stack / 1e6:.1f} MB: compression {stack / size:.1f}x"]
    residual = model.meta.get("residual_shift_raw_px")
    if isinstance(residual, list) and len(residual) == 3:
        lines.append("residual shift at the common focus (raw px): " + ", ".join(
            f"{n} ({r[0]:+.3f}, {r[1]:+.3f})" for n, r in zip(CHANNELS, residual, strict=True)))
    quadrant = model.meta.get("residual_quadrant_raw_px")
    if isinstance(quadrant, list) and len(quadrant) == 3:
        lines.append("worst quadrant residual (raw px): " + ", ".join(
            f"{n} {q:.3f}" for n, q in zip(CHANNELS, quadrant, strict=True)))
    return "\n".join(lines)
