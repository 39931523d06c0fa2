"""Compute-device selection: CUDA when present, CPU otherwise, overridable by the user."""

from __future__ import annotations

import torch

from .errors import FPMInputError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/``None`` -> ``cuda`` if available else ``cpu``; ``"cuda"`` without a GPU is an error."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FPMInputError("device 'cuda' requested but no CUDA GPU is available; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise FPMInputError(f"unknown device {device!r}; use auto, cpu or cuda") from exc
