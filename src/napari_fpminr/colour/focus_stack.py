"""All-in-focus in colour: one depth per patch for all three channels together.

The channels are registered first (common z and frame, :class:`ColourModel`), so a structure is in
focus at one common depth in all three. The focus measure runs once, on the sum of the three
channels' fields each divided by its mean (``volume.all_in_focus``, ``measure="edges"``: the
concentration of the complex gradient per patch, the sharpest plane refined by a parabola, the
per-pixel depth the contrast-weighted median of the covering structured patches). Every channel is
then read at that one depth per pixel (linear between the two neighbouring planes); pixels with no
structure take the common best focus.
"""

from __future__ import annotations

import numpy as np
import torch

from ..volume import all_in_focus
from .model import ColourModel, ColourSlices

__all__ = ["colour_all_in_focus", "fuse_at_depth"]


def fuse_at_depth(stack: np.ndarray, z_um: np.ndarray, depth_um: np.ndarray) -> np.ndarray:
    """``stack (Z, C, H, W)`` read at ``depth_um (H, W)`` per pixel (linear in z, clamped to the range)."""
    z = np.asarray(z_um, np.float64)
    Z = z.size
    if Z == 1:
        return stack[0]
    idx = np.interp(depth_um, z, np.arange(Z, dtype=np.float64))
    k0 = np.clip(np.floor(idx).astype(np.int64), 0, Z - 2)
    frac = np.clip(idx - k0, 0.0, 1.0).astype(np.float32)
    s = torch.as_tensor(stack)
    a = s.gather(0, torch.as_tensor(k0)[None, None].expand(1, s.shape[1], -1, -1))[0]
    b = s.gather(0, torch.as_tensor(k0 + 1)[None, None].expand(1, s.shape[1], -1, -1))[0]
    f = torch.as_tensor(frac)[None]
    return (a * (1 - f) + b * f).numpy()


def colour_all_in_focus(model: ColourModel, z_um, patch: int = 64, stride: int = 16,
                        min_contrast: float = 0.02) -> tuple[ColourSlices, np.ndarray]:
    """``(slices with Z = 1, depth_um (H, W))``: the colour all-in-focus image and its depth map (NaN: no structure)."""
    z = np.asarray(z_um, np.float64).reshape(-1)
    s = model.render(z, parts=("transmittance", "amplitude", "phase"))
    fields = s.amplitude * np.exp(1j * s.phase)  # (Z, 3, H, W)
    norm = np.abs(fields.mean(axis=(0, 2, 3), keepdims=True)).clip(1e-12)
    combined = (fields / norm).sum(axis=1)
    _, depth = all_in_focus(np.abs(combined).astype(np.float32), z, patch, stride,
                            phase=np.angle(combined).astype(np.float32), measure="edges", min_contrast=min_contrast)
    common = float(np.clip(model.meta.get("common_focus_um", np.median(z)), z.min(), z.max()))
    d = np.where(np.isfinite(depth), depth, common)
    out = [fuse_at_depth(getattr(s, k).astype(np.float32), z, d)[None] for k in ("transmittance", "amplitude")]
    # phase: fuse the complex field, not the angle (no wrap artefacts)
    f = fuse_at_depth(fields.real.astype(np.float32), z, d) + 1j * fuse_at_depth(fields.imag.astype(np.float32), z, d)
    return ColourSlices(out[0], out[1], np.angle(f)[None].astype(np.float32)), depth.astype(np.float32)
