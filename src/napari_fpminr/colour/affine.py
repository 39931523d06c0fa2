"""Field-varying lateral registration of colour channels: an affine map fitted to local shifts.

One shift cannot register what varies across the field (the UConn blue channel is 0.11 % / 0.13 %
larger than green along y / x: lateral colour). :func:`local_shifts` measures the shift on a grid
of patches (:func:`.register.register_fields`), :func:`fit_affine` fits ``d(p) = t + A·(p - centre)``
through them, :func:`affine_resample` resamples a band-limited field exactly at ``p + d(p)``; the
colour job (:mod:`.job`) applies a fit where :meth:`AffineFit.significant`: baked into a low-rank
channel's coefficients (:func:`bake_affine`) or resampled into an fpm stack.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .model import REFERENCE, ColourModel
from .register import register_fields

__all__ = ["AFFINE_MIN_EXPLAINED", "AFFINE_MIN_RAW_PX", "AffineFit", "affine_record", "affine_resample", "bake_affine",
           "fit_affine", "fit_affines", "local_shifts", "wanted"]


#: an affine correction is applied only where its linear part moves a field corner by at least this many raw
#: px: below, it is within the noise of the local shifts (0.01-0.04 raw px between blue patches of the UConn
#: smear) and a quarter of the 0.2 raw px a colour registration must reach
AFFINE_MIN_RAW_PX = 0.05
#: ... and where it explains at least this share of the variance of the patch shifts about their mean (what a
#: translation leaves): a linear trend, not noise. Fits to the simulated slide's patch noise (no scale there)
#: explained 23-26 %; the UConn blue channel's 99 % (red's 72 %, of a 0.018 raw px rms that moves a corner by 0.046)
AFFINE_MIN_EXPLAINED = 0.5


@dataclass
class AffineFit:
    """Local shifts ``d(p) ≈ t + A·(p - centre)`` (hr px, ``(y, x)`` order) of a moving field relative to a
    reference: ``reference(p) ≈ moving(p + d(p))``. ``patches``: each patch's centre and measured shift
    (hr px, ``(cy, cx, dy, dx)``), ``used``: those the fit kept; ``rms_before``: the kept patches' shifts
    about their mean (what a translation leaves), ``rms_after``: about the fit (hr px)."""

    shift: np.ndarray  # (2,) t
    linear: np.ndarray  # (2, 2) A
    centre: np.ndarray  # (2,) the field centre (hr px)
    patches: np.ndarray  # (n, 4)
    used: np.ndarray  # (n,) bool
    rms_before: float
    rms_after: float

    @property
    def explained(self) -> float:
        """Share of the patch shifts' variance about their mean that the linear part explains (R²)."""
        return 1.0 - (self.rms_after / self.rms_before) ** 2 if self.rms_before > 0 else 0.0

    def significant(self, shape: tuple[int, int], upsample: float) -> bool:
        """Worth applying: moves a corner by ≥ ``AFFINE_MIN_RAW_PX`` raw px, explains ≥ ``AFFINE_MIN_EXPLAINED``."""
        return (self.corner_displacement(shape) >= AFFINE_MIN_RAW_PX * upsample
                and self.explained >= AFFINE_MIN_EXPLAINED)

    def corner_displacement(self, shape: tuple[int, int]) -> float:
        """Largest displacement of the linear part at a corner of a field of ``shape`` (hr px)."""
        H, W = shape
        corners = np.array([[0, 0], [0, W - 1], [H - 1, 0], [H - 1, W - 1]], np.float64) - self.centre
        return float(np.max(np.hypot(*(self.linear @ corners.T))))


def local_shifts(reference: np.ndarray, moving: np.ndarray, band_cycles_per_px: float, grid: int = 4,
                 patch_fraction: float = 0.5, observable: str = "phase_gradient") -> np.ndarray:
    """Shift of ``moving`` relative to ``reference`` (complex fields, :func:`register_fields` on ``observable``) on
    a ``grid`` × ``grid`` array of overlapping patches of ``patch_fraction`` of the field; rows ``(cy, cx, dy, dx)``
    hr px."""
    H, W = reference.shape
    ph, pw = max(16, int(H * patch_fraction)), max(16, int(W * patch_fraction))
    rows = []
    for y0 in np.linspace(0, H - ph, grid).round().astype(int):
        for x0 in np.linspace(0, W - pw, grid).round().astype(int):
            dy, dx = register_fields(reference[y0:y0 + ph, x0:x0 + pw], moving[y0:y0 + ph, x0:x0 + pw],
                                     band_cycles_per_px, observable=observable)
            rows.append((y0 + (ph - 1) / 2, x0 + (pw - 1) / 2, dy, dx))
    return np.array(rows, np.float64)


def fit_affine(patches: np.ndarray, shape: tuple[int, int], outlier_px: float) -> AffineFit:
    """Least-squares affine ``d(p) = t + A·(p - centre)`` through the patch shifts (:func:`local_shifts`), then
    once more without the patches farther than ``max(3 × median, outlier_px)`` from it (a patch the
    correlation did not lock on)."""
    centre = (np.asarray(shape, np.float64) - 1) / 2
    p = patches[:, :2] - centre
    d = patches[:, 2:]
    design = np.column_stack([np.ones(len(p)), p])  # (n, 3): [1, py, px]
    used = np.ones(len(p), bool)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(design[used], d[used], rcond=None)  # (3, 2): rows t, A[:, 0], A[:, 1]
        resid = np.hypot(*(d - design @ coef).T)
        keep = resid <= max(3 * np.median(resid), outlier_px)
        if keep.sum() < 4 or np.array_equal(keep, used):
            break
        used = keep
    coef, *_ = np.linalg.lstsq(design[used], d[used], rcond=None)
    resid = d - design @ coef
    about_mean = d[used] - d[used].mean(0)
    return AffineFit(coef[0].copy(), coef[1:].T.copy(), centre, patches, used,
                     float(np.sqrt(np.mean(np.sum(about_mean ** 2, 1)))),
                     float(np.sqrt(np.mean(np.sum(resid[used] ** 2, 1)))))


def affine_resample(field: torch.Tensor, matrix, offset) -> torch.Tensor:
    """``out(p) = field(M·p + b)`` for complex ``field (..., H, W)``, ``p = (y, x)`` hr px, evaluated exactly for a
    periodic band-limited field (its DFT interpolated at the mapped points), in two 1D passes.

    ``out(y, x) = g(y', x)`` with ``y' = M_yy·y + M_yx·x + b_y`` and ``g(y', x) = field(y', α·y' + β·x + γ)``
    (``α = M_xy/M_yy``, ``β = M_xx - M_xy·M_yx/M_yy``, ``γ = b_x - M_xy·b_y/M_yy``), so that the composition is
    exactly ``field(M·p + b)``. Each pass is a shared scaling (one matrix of the DFT evaluated at the scaled
    positions) times a per-line phase ramp (the line-dependent offset); cost ``O(H·W·(H + W))``.
    """
    M = np.asarray(matrix, np.float64)
    b = np.asarray(offset, np.float64)
    f = field.to(torch.complex64)
    H, W = f.shape[-2:]
    alpha = M[1, 0] / M[0, 0]
    beta = M[1, 1] - M[1, 0] * M[0, 1] / M[0, 0]
    gamma = b[1] - M[1, 0] * b[0] / M[0, 0]
    # pass 1, along x: row y' samples field at x'' = β·x + (α·y' + γ)
    g = _scaled_lines(f, beta, alpha * np.arange(H) + gamma)
    # pass 2, along y: column x samples g at y' = M_yy·y + (M_yx·x + b_y)
    out = _scaled_lines(g.transpose(-1, -2), M[0, 0], M[0, 1] * np.arange(W) + b[0]).transpose(-1, -2)
    return out.contiguous()


def _scaled_lines(f: torch.Tensor, scale: float, offsets: np.ndarray) -> torch.Tensor:
    """Line ``i`` (second-to-last axis) of ``f (..., L, N)`` at ``scale·n + offsets[i]`` (band-limited, periodic)."""
    N = f.shape[-1]
    k = torch.fft.fftfreq(N, dtype=torch.float64, device=f.device)
    spec = torch.fft.fft(f, dim=-1)
    ramp = torch.polar(torch.ones(len(offsets), N, dtype=torch.float64, device=f.device),
                       2 * np.pi * torch.as_tensor(offsets, dtype=torch.float64, device=f.device)[:, None] * k[None, :])
    n = torch.arange(N, dtype=torch.float64, device=f.device)
    evaluate = torch.polar(torch.full((N, N), 1.0 / N, dtype=torch.float64, device=f.device),
                           2 * np.pi * scale * k[:, None] * n[None, :])  # (k, n)
    return (spec * ramp.to(torch.complex64)) @ evaluate.to(torch.complex64)


# ---- the colour job's use of them ------------------------------------------------------------
def fit_affines(fields: np.ndarray, upsample: int, band: float) -> list:
    """Per channel, the affine fit of its local shifts against the reference at the common focus
    (:func:`local_shifts` on a 4 × 4 grid of half-field patches, :func:`fit_affine`), or
    ``None`` (reference; field under 64 hr px). Applied or not: :func:`affine_record`."""
    H, W = fields.shape[-2:]
    if min(H, W) < 64:
        return [None, None, None]
    return [None if c == REFERENCE else fit_affine(local_shifts(fields[REFERENCE], fields[c], band), (H, W),
                                                     outlier_px=0.1 * upsample) for c in range(3)]


def affine_record(fit, shape, upsample: int, applied: bool) -> dict | None:
    """JSON-safe record of ``fit`` in raw px (what the model and stack metadata keep); None for the reference."""
    if fit is None:
        return None
    return {"applied": applied, "linear": fit.linear.reshape(-1).tolist(),
            "shift_raw_px": (fit.shift / upsample).tolist(),
            "corner_raw_px": fit.corner_displacement(shape) / upsample,
            "patch_rms_before_raw_px": fit.rms_before / upsample, "patch_rms_after_raw_px": fit.rms_after / upsample,
            "explained": fit.explained,
            "patches_used": int(fit.used.sum()), "patches": int(fit.used.size)}


def wanted(fit, shape, upsample: int) -> bool:
    """A fit exists (not the reference) and is worth applying (:meth:`AffineFit.significant`)."""
    return fit is not None and fit.significant(shape, upsample)


def bake_affine(model: ColourModel, c: int, fit) -> None:
    """Apply ``fit`` to low-rank channel ``c``: its spatial factors resampled once (:func:`affine_resample`)
    so that, with the decode's phase-ramp shift ``t`` (now ``shift_px + fit.shift``), channel ``c`` decodes as
    ``S(p + t + A·(p - centre))``: ``S'(q) = S(q + A·(q - centre - t))``. The decode cost does not change."""
    reg = model.registration[c]
    net = model.channels[c].net
    t = np.asarray(reg.shift_px, np.float64) + fit.shift
    A = fit.linear
    H, W = model.hr_shape
    with torch.no_grad():
        coef = torch.complex(net.coefficients[0], net.coefficients[1])  # (R, K)
        full = coef.new_zeros(coef.shape[0], H * W).index_copy_(1, net.index, coef).reshape(-1, H, W)
        fields = torch.fft.ifft2(full, norm="ortho")
        warped = affine_resample(fields, np.eye(2) + A, -A @ (fit.centre + t))
        new = torch.fft.fft2(warped, norm="ortho").reshape(coef.shape[0], -1)[:, net.index]
        net.coefficients.copy_(torch.view_as_real(new.to(torch.complex64)).permute(2, 0, 1))
        net.round_to_storage_()
    reg.shift_px = (float(t[0]), float(t[1]))
    reg.linear = tuple(float(v) for v in A.reshape(-1))
