"""Lazy volumes of a model or a stack, all-in-focus fusion and depth maps.

``Volume(model_or_stack)`` exposes amplitude and phase at any z sampling as dask arrays with
one chunk per z-slice: a chunk is decoded by ``Model.render`` only when something (napari,
a writer) asks for it. For a :class:`~napari_fpminr.recon.stack.Stack`, each requested depth
takes the nearest stored plane. ``step`` samples every ``step``-th hr pixel (multiscale
pyramids). Dask names include ``Model.model_id``, so a retrained or continued model never
reuses cached chunks of an older state.

All-in-focus (shared/DESIGN.md §1): the normal-variance focus measure of a patch,
``NV = Σ(a - μ)² / (N·μ)`` = variance / mean of the amplitude, on overlapping patches
(64 px, stride 16); each patch takes its sharpest z, and every pixel averages the patches that
cover it (blend by overlap counts). The depth map is the same blend of the chosen depths (µm).
All of it is pooling / transposed convolution: no Python loop over patches.
"""

from __future__ import annotations

import hashlib

import dask.array as da
import numpy as np
import torch
import torch.nn.functional as F

from .recon.model import Model


def _key(*parts) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]


class Volume:
    """Lazy view of a :class:`Model` or a ``Stack`` (anything with amplitude, phase, z_um)."""

    def __init__(self, source):
        if isinstance(source, Model) or hasattr(source, "render_parts"):
            self.model, self.stack = source, None
        elif all(hasattr(source, a) for a in ("amplitude", "phase", "z_um")):
            self.model, self.stack = None, source
        else:
            raise TypeError(f"Volume needs a Model or a Stack, got {type(source).__name__}")

    @property
    def hr_shape(self) -> tuple[int, int]:
        if self.model is not None:
            return tuple(self.model.hr_shape)
        return tuple(self.stack.amplitude.shape[1:])

    @property
    def dx_hr_um(self) -> float:
        src = self.model if self.model is not None else self.stack
        return float(src.optics.dx_hr_um)

    @property
    def z_range_um(self) -> tuple[float, float]:
        if self.model is not None:
            return (self.model.z_min_um, self.model.z_max_um)
        z = np.asarray(self.stack.z_um, dtype=float)
        return (float(z.min()), float(z.max()))

    def default_z(self, z_step_um: float = 0.25) -> np.ndarray:
        """The model's range at ``z_step_um`` (161 planes over ±20 µm), or the stack's planes."""
        if self.model is not None:
            return self.model.z_planes(z_step_um)
        return np.asarray(self.stack.z_um, dtype=float)

    def amplitude(self, z_um=None, step: int = 1) -> da.Array:
        """Amplitude ``(Z, h, w)`` float32, lazily, one chunk per depth."""
        return self._lazy("amplitude", z_um, step)

    def phase(self, z_um=None, step: int = 1) -> da.Array:
        """Phase (rad) ``(Z, h, w)`` float32, lazily, one chunk per depth."""
        return self._lazy("phase", z_um, step)

    def _lazy(self, part: str, z_um, step: int) -> da.Array:
        z = self.default_z() if z_um is None else np.atleast_1d(np.asarray(z_um, dtype=np.float64)).reshape(-1)
        step = int(step)
        if step < 1:
            raise ValueError(f"step must be >= 1, got {step}")
        H, W = self.hr_shape
        h, w = -(-H // step), -(-W // step)
        if self.model is not None:
            model = self.model
            name = f"fpminr-{part}-{model.model_id}-{_key(z.tobytes(), step)}"

            def block(zv: float) -> np.ndarray:
                return model.render_parts([zv], (part,), None, step)[0]
        else:
            planes = getattr(self.stack, part)
            zs = np.asarray(self.stack.z_um, dtype=np.float64)
            name = f"fpminr-stack-{part}-{id(self.stack):x}-{_key(z.tobytes(), step)}"

            def block(zv: float) -> np.ndarray:
                k = int(np.argmin(np.abs(zs - zv)))
                return np.ascontiguousarray(planes[k:k + 1, ::step, ::step], dtype=np.float32)

        graph = {(name, i, 0, 0): (block, float(zv)) for i, zv in enumerate(z)}
        return da.Array(graph, name, chunks=((1,) * len(z), (h,), (w,)), dtype=np.float32)

    def all_in_focus(self, z_um=None, step: int = 1, patch: int = 64, stride: int = 16
                     ) -> tuple[np.ndarray, np.ndarray]:
        """``(fused amplitude (h, w), depth_um (h, w))`` over the depths ``z_um`` (default sampling)."""
        z = self.default_z() if z_um is None else np.atleast_1d(np.asarray(z_um, dtype=np.float64))
        amp = self.amplitude(z, step).compute(scheduler="synchronous")
        return all_in_focus(amp, z, patch=max(4, patch // step), stride=max(1, stride // step))


def normal_variance(amplitude: torch.Tensor, patch: int, stride: int) -> torch.Tensor:
    """``NV = Σ(a-μ)²/(N·μ)`` of every ``patch``² window at ``stride``: ``(Z, H, W)`` -> ``(Z, Hp, Wp)``."""
    x = amplitude[:, None].double()
    mu = F.avg_pool2d(x, patch, stride)
    var = (F.avg_pool2d(x * x, patch, stride) - mu * mu).clamp_min(0.0)
    return (var / mu.abs().clamp_min(1e-12))[:, 0]


def all_in_focus(amplitude, z_um, patch: int = 64, stride: int = 16, z_chunk: int = 16
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Fuse a stack ``(Z, H, W)`` into the sharpest-plane image and its depth map (µm).

    Images smaller than ``patch`` use one patch the size of the image. The image is edge-padded
    so that the patch grid covers every pixel. Returns float32 ``(H, W)`` arrays.
    """
    a = torch.as_tensor(np.asarray(amplitude, dtype=np.float32))
    z = np.asarray(z_um, dtype=np.float64).reshape(-1)
    if a.ndim != 3 or a.shape[0] != z.size or a.shape[0] == 0:
        raise ValueError(f"amplitude must be (Z, H, W) with Z = len(z_um); got {tuple(a.shape)} and {z.size} depths")
    Z, H, W = a.shape
    patch = int(min(patch, H, W))
    stride = int(max(1, min(stride, patch)))
    pad_h = (-(H - patch)) % stride
    pad_w = (-(W - patch)) % stride
    ap = F.pad(a[None], (0, pad_w, 0, pad_h), mode="replicate")[0] if (pad_h or pad_w) else a
    nv = normal_variance(ap, patch, stride)  # (Z, Hp, Wp)
    best = nv.argmax(dim=0)  # (Hp, Wp): sharpest plane per patch
    ones = torch.ones(1, 1, patch, patch, dtype=torch.float32)
    Hq, Wq = ap.shape[-2:]
    fused = torch.zeros(Hq, Wq)
    count = torch.zeros(Hq, Wq)
    depth = torch.zeros(Hq, Wq, dtype=torch.float64)
    for s in range(0, Z, z_chunk):  # bounded memory: z chunks, not patches
        idx = torch.arange(s, min(Z, s + z_chunk))
        chosen = (best[None] == idx[:, None, None]).float()[:, None]  # (z, 1, Hp, Wp)
        weight = F.conv_transpose2d(chosen, ones, stride=stride)[:, 0]  # patches covering each pixel
        weight = weight[:, :Hq, :Wq]
        fused += (weight * ap[idx]).sum(0)
        count += weight.sum(0)
        depth += (weight.double() * torch.as_tensor(z[s:s + len(idx)])[:, None, None]).sum(0)
    count = count.clamp_min(1e-12)
    fused = (fused / count)[:H, :W]
    depth = (depth / count.double())[:H, :W]
    return fused.numpy().astype(np.float32), depth.numpy().astype(np.float32)
