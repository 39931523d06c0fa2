"""Lazy volumes of a model or a stack, all-in-focus fusion and depth maps.

``Volume(model_or_stack)`` exposes amplitude and phase at any z sampling as dask arrays with
one chunk per z-slice: a chunk is decoded by ``Model.render`` only when something (napari,
a writer) asks for it. For a :class:`~napari_fpminr.recon.stack.Stack`, each requested depth
takes the nearest stored plane. ``step`` samples every ``step``-th hr pixel (multiscale
pyramids). Dask names include ``Model.model_id``, so a retrained or continued model never
reuses cached chunks of an older state.

All-in-focus (shared/DESIGN.md §1): overlapping patches (``patch`` px, ``stride``; defaults
64/16), a focus measure per patch and plane, the sharpest z per patch, blended over the overlaps.

* Focus measures. ``"nv"``: the DESIGN normal variance of the amplitude,
  ``NV = Σ(a - μ)² / (N·μ)``. It is right for amplitude (absorbing) structure, but defocus turns
  phase into amplitude contrast: for a weak object with amplitude and phase spectra ``A``, ``Φ``
  and defocus phase ``χ = πλ·dz·k²`` the amplitude variance is ``Σ|A cosχ - Φ sinχ|²``, which
  for cells that delay the phase grows away from focus and, through the ``-Re(AΦ*) sin2χ``
  term, is skewed to one side (simulated cells: NV peaks 3–6 µm off focus, or at the range end).
  ``"edges"`` (the default whenever the stack's phase is known, as for every Stack and Model):
  the concentration ``mean(g²)/mean(g)²`` of the complex-field gradient ``g = |∇o|``. Free
  propagation is unitary, so ``Σg²`` is (nearly) conserved and only its spread changes: the edges
  of a thin object, absorbing or phase, are most concentrated in the object's own plane; defocus
  rings spread them. No background or phase offset has to be estimated (a gradient ignores both).
  ``"data"`` (the default whenever the raw measurements are passed): depth from the physics,
  not from the look of the slices. Every plane's field is put through the forward model at its
  own depth, and the residual against the measured raw amplitudes, summed over the LEDs, is
  pooled per patch: the patch's depth is where its plane explains the measurements best
  (:func:`~napari_fpminr.recon.metrics.measurement_residual_maps`). It is the measure for
  FPM-INR models, whose slices change little with z away from the sample (the self-supervised
  loss barely separates the planes there), so that sharpness measures find no peak (measured on
  the simulated tilted smear: median depth error 0.4–0.7 µm with "data", 3–7 µm with "edges").
* Sub-plane depth: the vertex of the parabola through the best plane and its two neighbours.
* Structure: a patch has structure when the rms of its complex field (amplitude only for "nv")
  about the patch mean, relative to the mean, reaches ``min_contrast`` (default 2 %) at its
  sharpest plane. Pixels covered by no such patch get depth NaN: "where there is structure".
* Per pixel: the depth is the contrast-weighted *median* of the depths of the structured patches
  that cover it (a pixel between objects at different depths takes the majority's depth, not an
  average that matches neither); the fused amplitude is the contrast-weighted blend over the
  covering patches of the stack linearly interpolated at each patch's refined depth.
All of it is pooling / transposed convolution / gathers: no Python loop over patches.
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

    def all_in_focus(self, z_um=None, step: int = 1, patch: int = 64, stride: int = 16,
                     measure: str = "auto", min_contrast: float = 0.02, raw=None) -> tuple[np.ndarray, np.ndarray]:
        """``(fused amplitude (h, w), depth_um (h, w))`` over the depths ``z_um`` (default sampling).

        ``measure="auto"`` renders the phase too and uses the depth from the measurements
        (``"data"``) when ``raw`` (the raw data the source was reconstructed from) is given, else
        the complex-field focus measure (``"edges"``); ``"nv"`` needs the amplitude only (half the
        rendering). ``"data"`` needs ``step == 1``. See :func:`all_in_focus`.
        """
        z = self.default_z() if z_um is None else np.atleast_1d(np.asarray(z_um, dtype=np.float64))
        if measure not in FOCUS_MEASURES:
            raise ValueError(f"measure must be one of {FOCUS_MEASURES}, got {measure!r}")
        if (measure == "data" or (measure == "auto" and raw is not None)) and int(step) != 1:
            raise ValueError('measure="data" compares with the raw images: it needs step=1')
        amp = self.amplitude(z, step).compute(scheduler="synchronous")
        phase = None if measure == "nv" else self.phase(z, step).compute(scheduler="synchronous")
        pupil = None if measure == "nv" else self._pupils_at(z)
        return all_in_focus(amp, z, patch=max(4, patch // step), stride=max(1, stride // step),
                            phase=phase, measure=measure, min_contrast=min_contrast, raw=raw, pupil=pupil)


    def _pupils_at(self, z: np.ndarray):
        """The pupil the source's fields were reconstructed with, for the depths ``z``.

        A model's (possibly recovered) pupil ``(h, w)``; for a stack with per-plane recovered
        pupils, the pupil of the plane each depth is answered with (the nearest, as in
        :meth:`amplitude`), ``(Z, h, w)``; else the optics' pupil (None: the ideal one).
        """
        if self.model is not None:
            return self.model.optics.pupil
        per_plane = getattr(self.stack, "pupil", None)
        if per_plane is not None:
            zs = np.asarray(self.stack.z_um, dtype=np.float64)
            return np.asarray(per_plane)[np.abs(zs[None, :] - z[:, None]).argmin(axis=1)]
        return getattr(self.stack.optics, "pupil", None)


FOCUS_MEASURES = ("auto", "nv", "edges", "data")


def _pool(x: torch.Tensor, patch: int, stride: int) -> torch.Tensor:
    return F.avg_pool2d(x[:, None], patch, stride)[:, 0]


def normal_variance(amplitude: torch.Tensor, patch: int, stride: int) -> torch.Tensor:
    """``NV = Σ(a-μ)²/(N·μ)`` of every ``patch``² window at ``stride``: ``(Z, H, W)`` -> ``(Z, Hp, Wp)``."""
    x = amplitude.double()
    mu = _pool(x, patch, stride)
    var = (_pool(x * x, patch, stride) - mu * mu).clamp_min(0.0)
    return var / mu.abs().clamp_min(1e-12)


def edge_sparsity(field: torch.Tensor, patch: int, stride: int) -> torch.Tensor:
    """Concentration of the complex-field gradient per patch: ``mean(g²) / mean(g)²``, ``g = |∇o|``.

    ``(Z, H, W)`` complex -> ``(Z, Hp, Wp)``, >= 1, largest where the edges of the patch's
    structure are sharpest (see the module docstring for why this, not NV, for complex fields).
    """
    o = field.to(torch.complex128)
    gx = torch.roll(o, -1, 2) - o
    gy = torch.roll(o, -1, 1) - o
    g2 = gx.real.square() + gx.imag.square() + gy.real.square() + gy.imag.square()
    m1 = _pool(g2.sqrt(), patch, stride)
    return _pool(g2, patch, stride) / m1.square().clamp_min(1e-30)


def _refine_peak(score: torch.Tensor, z: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-plane peak of ``score (Z, Hp, Wp)`` along z: ``(depth_um, plane index as float)``.

    The vertex of the parabola through the best plane and its two neighbours (any spacing),
    kept between those neighbours; at the ends of the range the best plane itself.
    """
    zt = torch.as_tensor(z, dtype=torch.float64)
    Z = score.shape[0]
    best = score.argmax(dim=0)
    depth = zt[best]
    index = best.double()
    if Z < 3:
        return depth, index
    k = best.clamp(1, Z - 2)
    s0, s1, s2 = (score.gather(0, (k + d)[None])[0] for d in (-1, 0, 1))
    z0, z1, z2 = zt[k - 1], zt[k], zt[k + 1]
    num = (z1 - z0) ** 2 * (s1 - s2) - (z1 - z2) ** 2 * (s1 - s0)
    den = (z1 - z0) * (s1 - s2) - (z1 - z2) * (s1 - s0)
    interior = (best == k) & (den.abs() > 1e-300)
    vertex = z1 - 0.5 * num / torch.where(interior, den, torch.ones_like(den))
    vertex = torch.minimum(torch.maximum(vertex, z0), z2)
    depth = torch.where(interior, vertex, depth)
    # plane index of the refined depth (piecewise linear in z)
    lo = torch.where(depth < z1, k - 1, k)
    zl, zh = zt[lo], zt[lo + 1]
    frac = ((depth - zl) / (zh - zl)).clamp(0.0, 1.0)
    index = torch.where(interior, lo.double() + frac, index)
    return depth, index


def _covering(n: int, n_patches: int, patch: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each pixel 0..n-1: indices ``(K, n)`` of the patches covering it and a validity mask."""
    K = -(-patch // stride)
    pix = torch.arange(n)
    idx = pix[None] // stride - torch.arange(K)[:, None]
    valid = (idx >= 0) & (idx < n_patches) & (pix[None] < idx * stride + patch)
    return idx.clamp(0, n_patches - 1), valid


def _weighted_median(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted median along dim 0 (weights >= 0; NaN where all weights are 0)."""
    order = values.argsort(dim=0)
    v = values.gather(0, order)
    w = weights.gather(0, order)
    cum = w.cumsum(0)
    total = cum[-1:]
    pick = (cum < 0.5 * total).sum(0, keepdim=True).clamp(max=values.shape[0] - 1)
    med = v.gather(0, pick)[0]
    return torch.where(total[0] > 0, med, torch.full_like(med, float("nan")))


def _residual_lr(amplitude: torch.Tensor, phase: torch.Tensor, z: np.ndarray, raw, pupil,
                 z_chunk: int) -> tuple[torch.Tensor, int]:
    """Measurement residual of every plane on the raw grid, ``(Z, h, w)`` float32, and hr/raw factor.

    The complex fields are built ``z_chunk`` planes at a time (a whole hr stack in complex form
    would be the largest array of the computation); the forward model runs on the default device.
    """
    from .recon.metrics import measurement_residual_maps

    Z, H, W = amplitude.shape
    h, w = raw.lr_shape
    if H % h or W % w or H // h != W // w:
        raise ValueError(f"the stack is {H}x{W} hr pixels but the raw data are {h}x{w}: "
                         "not the field of view it was reconstructed from")
    data = raw.normalized()
    maps = torch.empty(Z, h, w, dtype=torch.float32)
    for s in range(0, Z, z_chunk):
        field = torch.polar(amplitude[s:s + z_chunk], phase[s:s + z_chunk])
        p = pupil if pupil is None or np.ndim(pupil) == 2 else pupil[s:s + z_chunk]
        maps[s:s + z_chunk] = torch.as_tensor(
            measurement_residual_maps(data, field, z[s:s + z_chunk], device="auto", pupil=p))
    return maps, H // h


def all_in_focus(amplitude, z_um, patch: int = 64, stride: int = 16, z_chunk: int = 16, *,
                 phase=None, measure: str = "auto", min_contrast: float = 0.02, raw=None, pupil=None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Fuse a stack ``(Z, H, W)`` into the sharpest-plane image and its depth map (µm).

    Args:
        amplitude: ``(Z, H, W)`` amplitude stack; ``z_um`` its ``Z`` depths (any order of spacing).
        patch, stride: focus patches (hr pixels). Images smaller than ``patch`` use one patch
            the size of the image; the image is edge-padded so that the grid covers every pixel.
        phase: optional ``(Z, H, W)`` phase (rad) of the same stack; enables ``measure="edges"``.
        measure: ``"nv"`` (normal variance of the amplitude), ``"edges"`` (concentration of the
            complex-field gradient; needs ``phase``), ``"data"`` (smallest residual against the
            raw measurements; needs ``phase`` and ``raw``), ``"auto"``: ``"data"`` when ``raw``
            and ``phase`` are given, else ``"edges"`` when ``phase`` is given, else ``"nv"``.
        raw: the :class:`~napari_fpminr.rawdata.RawData` the stack was reconstructed from
            (same field of view: hr grid = raw grid × upsample); ``pupil``: optional complex
            pupil ``(h, w)``, or one per plane ``(Z, h, w)``, to use instead of the raw optics'
            one (a model's or a stack's recovered pupil: the one its fields go with).
        min_contrast: a patch "has structure" when the rms of its (complex) field about the patch
            mean, relative to the mean, reaches this at its sharpest plane; pixels covered by no
            such patch get depth NaN (the fused image is defined everywhere).
    Returns:
        float32 ``(H, W)`` fused amplitude and depth map (µm, NaN where there is no structure).
    """
    a = torch.as_tensor(np.asarray(amplitude, dtype=np.float32))
    z = np.asarray(z_um, dtype=np.float64).reshape(-1)
    if a.ndim != 3 or a.shape[0] != z.size or a.shape[0] == 0:
        raise ValueError(f"amplitude must be (Z, H, W) with Z = len(z_um); got {tuple(a.shape)} and {z.size} depths")
    if measure not in FOCUS_MEASURES:
        raise ValueError(f"measure must be one of {FOCUS_MEASURES}, got {measure!r}")
    if measure == "auto":
        measure = "nv" if phase is None else ("edges" if raw is None else "data")
    if measure in ("edges", "data") and phase is None:
        raise ValueError(f'measure="{measure}" needs the phase of the stack')
    if measure == "data" and raw is None:
        raise ValueError('measure="data" needs the raw data the stack was reconstructed from (raw=)')
    p = None
    if phase is not None:
        p = torch.as_tensor(np.asarray(phase, dtype=np.float32))
        if p.shape != a.shape:
            raise ValueError(f"phase {tuple(p.shape)} must match amplitude {tuple(a.shape)}")
    Z, H, W = a.shape
    patch = int(min(patch, H, W))
    stride = int(max(1, min(stride, patch)))
    pad_h = (-(H - patch)) % stride
    pad_w = (-(W - patch)) % stride

    def padded(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[None], (0, pad_w, 0, pad_h), mode="replicate")[0] if (pad_h or pad_w) else x

    ap = padded(a)
    pp = None if p is None else padded(p)
    residual, up = _residual_lr(a, p, z, raw, pupil, z_chunk) if measure == "data" else (None, 1)
    Hq, Wq = ap.shape[-2:]
    # focus measure and structure contrast per patch and plane, in z chunks (bounded memory)
    score, contrast = [], []
    for s in range(0, Z, z_chunk):
        amp = ap[s:s + z_chunk].double()
        if pp is None:
            mu = _pool(amp, patch, stride)
            var = (_pool(amp * amp, patch, stride) - mu * mu).clamp_min(0.0)
            contrast.append(var.sqrt() / mu.abs().clamp_min(1e-12))
            score.append(var / mu.abs().clamp_min(1e-12))
        else:
            field = torch.polar(amp, pp[s:s + z_chunk].double())
            mr, mi = _pool(field.real, patch, stride), _pool(field.imag, patch, stride)
            mean2 = mr * mr + mi * mi
            var = (_pool(amp * amp, patch, stride) - mean2).clamp_min(0.0)
            contrast.append((var / mean2.clamp_min(1e-24)).sqrt())
            if measure == "data":  # each raw pixel's residual over the up×up hr pixels it covers
                r = residual[s:s + z_chunk].double().repeat_interleave(up, 1).repeat_interleave(up, 2)
                score.append(-_pool(padded(r), patch, stride))
            else:
                score.append(edge_sparsity(field, patch, stride) if measure == "edges"
                             else var / _pool(amp, patch, stride).clamp_min(1e-12))
    score = torch.cat(score)
    contrast = torch.cat(contrast)
    depth_p, index_p = _refine_peak(score, z)  # (Hp, Wp)
    best = score.argmax(dim=0)
    c_best = contrast.gather(0, best[None])[0]
    structured = c_best >= min_contrast
    # fused amplitude: each patch contributes the stack at its refined depth (linear between the
    # two neighbouring planes), weighted by its contrast; summed over overlaps by transposed conv
    weight_p = c_best.clamp_min(1e-6)
    k0 = index_p.floor().long().clamp(0, Z - 1)
    frac = (index_p - k0.double()).clamp(0.0, 1.0)
    k1 = (k0 + 1).clamp(max=Z - 1)
    ones = torch.ones(1, 1, patch, patch, dtype=torch.float64)
    fused = torch.zeros(Hq, Wq, dtype=torch.float64)
    for s in range(0, Z, z_chunk):
        idx = torch.arange(s, min(Z, s + z_chunk))[:, None, None]
        w = ((k0[None] == idx) * (1.0 - frac) + (k1[None] == idx) * frac) * weight_p  # (z, Hp, Wp)
        covered = F.conv_transpose2d(w[:, None], ones, stride=stride)[:, 0, :Hq, :Wq]
        fused += (covered * ap[s:s + len(idx)].double()).sum(0)
    total = F.conv_transpose2d(weight_p[None, None], ones, stride=stride)[0, 0, :Hq, :Wq]
    fused = (fused / total.clamp_min(1e-30))[:H, :W]
    # depth per pixel: contrast-weighted median of the depths of the structured patches covering it
    Hp, Wp = depth_p.shape
    ri, rv = _covering(H, Hp, patch, stride)
    ci, cv = _covering(W, Wp, patch, stride)
    wsel = torch.where(structured, c_best, torch.zeros_like(c_best))
    depth = torch.empty(H, W, dtype=torch.float64)
    rows_per = max(1, (1 << 22) // max(1, ri.shape[0] * ci.shape[0] * W))
    for r0 in range(0, H, rows_per):
        r = slice(r0, min(H, r0 + rows_per))
        rr, cc = ri[:, r][:, None, :, None], ci[None, :, None, :]
        vals = depth_p[rr, cc].flatten(0, 1)
        wts = (wsel[rr, cc] * (rv[:, r][:, None, :, None] & cv[None, :, None, :])).flatten(0, 1)
        depth[r] = _weighted_median(vals, wts)
    return fused.numpy().astype(np.float32), depth.numpy().astype(np.float32)
