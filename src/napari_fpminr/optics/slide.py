"""Whole-slide simulation: a large field, smoothly varying depth, exact spherical-wave LEDs.

The sample is one thin layer of stained cells (transmittance ``t(x)``, see
:func:`~napari_fpminr.optics.samples.cell_layer`) lying on a tilted, slightly curved slide::

    z(x, y) = z_centre + a·x + b·y + c·(x² + y²)        (x, y in mm from the field centre, z in µm)

Each LED ``i`` sits at ``p_i`` on a board ``D = distance_mm`` below the plane ``z = 0``; a larger
``z`` is further upstream (closer to the LEDs), as in the forward model. The illumination is the
exact spherical wave of a point source, ``exp(i·2π·R_i(x, z)/λ)`` with
``R_i = sqrt(|x - p_i|² + (D - z)²)``, evaluated at every hr pixel on the sample itself
(``z = z(x)``): each field point sees each LED under its own angle, with local illumination NA
``(x - p_i)/R_i``, the ``LEDArray.na_at`` of that point. Its amplitude is taken as 1 (the
``1/R`` fall-off and the LED's emission pattern are what a flat-field correction removes).

Imaging (same sign and scale as :class:`~napari_fpminr.optics.forward.FPMForward`): the part of
the exit field at depth ``z`` reaches the focal plane through ``exp(i·kz(k)·z)``, so the image
spectrum of LED ``i`` is

    G_i(k) = P(k) · ∫ t(x)·exp(i·2π·R_i(x, z(x))/λ)·exp(i·kz(k)·z(x))·exp(-i2π·k·x) dx.

The defocus depends on both ``k`` and ``x``. Write ``kz(k) = k_c + a(k)`` with ``k_c`` the middle
of ``kz`` over the pupil, so ``|a| <= (kz_max - kz_min)/2`` is small (0.07 rad/µm at NA 0.15),
and interpolate ``exp(i·a(k)·z)`` in ``z`` by a Lagrange polynomial at ``n`` Chebyshev nodes
``z_j`` spanning the depth range:

    G_i(k) = P(k) · Σ_j exp(i·a(k)·z_j) · F{ v_i · L_j(z(x)) }(k),   v_i = t·exp(i·2π·R_i/λ + i·k_c·z(x))

``n`` is the smallest count whose interpolation error bound ``ω^n/(2^(n-1)·n!)`` (``ω`` = max
``|a|`` times the half depth range) is below ``tol`` (1e-5 by default; 3–5 nodes for tens of
µm of depth), so this is exact to ``tol`` for a smooth depth map: no depth bins, no staircase.
Only the pupil's window of each spectrum is needed: the hr FFT is pruned to it (rows, then the
window's columns). Cost per LED: ``n`` pruned hr FFTs and one raw-sized inverse FFT; LEDs are
processed one after another, so memory stays at a few hr-sized arrays.

Edges: the simulated region is the requested field plus ``margin`` raw pixels on every side,
cropped at the end. The field is multiplied by a raised-cosine field stop over the outer half of
the margin, so the FFT's periodic wrap meets no discontinuity; the coherent image of that smooth
edge dies out before it reaches the kept field (tested against a larger margin).

Truth: the amplitude and phase of ``t`` band-limited to the synthetic NA at the field centre, and
the depth map ``z(x, y)`` where the sample is not transparent (NaN elsewhere), on the hr grid of
the kept field.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import FPMInputError
from .led_array import LEDArray
from .samples import band_limit, cell_layer, structure_mask
from .system import Optics

__all__ = ["SLIDE_DEFAULTS", "chebyshev_node_count", "depth_map", "slide_images", "slide_leds", "slide_optics"]

SLIDE_DEFAULTS: dict[str, Any] = {
    "tilt_um_per_mm": (6.0, -4.0),  # (a, b): slope of the slide along x and y
    "curvature_um_per_mm2": 8.0,  # c: bowing of the slide
    "z_centre_um": 0.0,
    "phase_max_rad": 0.15,  # stained smear: absorption-dominant cells
}
_TOL = 1e-5


def slide_leds(n_leds: int = 69, *, pitch_mm: float = 2.0, distance_mm: float = 30.0) -> LEDArray:
    """The ``n_leds`` LEDs nearest the centre of a square grid (raster order), 2 mm pitch, 30 mm below."""
    from .presets import paper_leds

    return paper_leds(n_leds, pitch_mm=pitch_mm, distance_mm=distance_mm)


def slide_optics(n_leds: int = 69, *, wavelength_um: float = 0.522, na_obj: float = 0.15, mag: float = 4.0,
                 pixel_um: float = 3.45, pitch_mm: float = 2.0, distance_mm: float = 30.0,
                 upsample: int = 2) -> tuple[Optics, LEDArray]:
    """The whole-slide system of issue 12: NA 0.15, 4×, 3.45 µm pixels, LEDs 30 mm away, 2 mm pitch.

    Returns ``(optics, leds)``; ``optics.na_illum`` is what the field centre sees.
    """
    leds = slide_leds(n_leds, pitch_mm=pitch_mm, distance_mm=distance_mm)
    optics = Optics(wavelength_um=wavelength_um, na_obj=na_obj, mag=mag, pixel_um=pixel_um,
                    na_illum=leds.na_at(), upsample=upsample)
    return optics, leds


def depth_map(y_mm: np.ndarray, x_mm: np.ndarray, *, tilt_um_per_mm=(0.0, 0.0), curvature_um_per_mm2=0.0,
              z_centre_um=0.0) -> np.ndarray:
    """Slide depth ``z_centre + a·x + b·y + c·(x² + y²)`` (µm) at ``(y, x)`` mm from the field centre."""
    a, b = (float(v) for v in tilt_um_per_mm)
    return float(z_centre_um) + a * x_mm + b * y_mm + float(curvature_um_per_mm2) * (x_mm**2 + y_mm**2)


def chebyshev_node_count(omega: float, tol: float = _TOL) -> int:
    """Fewest Chebyshev nodes ``n`` with ``ω^n/(2^(n-1)·n!) <= tol`` (interpolating ``exp(iωs)`` on [-1, 1])."""
    n = 1
    while omega**n / (2 ** (n - 1) * math.factorial(n)) > tol and n < 40:
        n += 1
    return n


def _lagrange_weights(s: torch.Tensor, nodes: np.ndarray) -> torch.Tensor:
    """``(n, ...)`` Lagrange basis polynomials at the ``nodes`` evaluated at ``s``."""
    out = []
    for j, sj in enumerate(nodes):
        w = torch.ones_like(s)
        for m, sm in enumerate(nodes):
            if m != j:
                w = w * ((s - sm) / (sj - sm))
        out.append(w)
    return torch.stack(out)


def _raised_cosine(n: int, taper: int, device) -> torch.Tensor:
    """1D field stop: 0 → 1 over the first and last ``taper`` samples (raised cosine), 1 between."""
    w = torch.ones(n, dtype=torch.float64, device=device)
    if taper > 0:
        ramp = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(taper, dtype=torch.float64, device=device) + 0.5) / taper)
        w[:taper] = ramp
        w[n - taper:] = ramp.flip(0)
    return w


def _pruned_window(u: torch.Tensor, lr_shape: tuple[int, int]) -> torch.Tensor:
    """Centred ``(h, w)`` window of ``fftshift(fft2(u, norm="forward"))`` without the full 2D FFT."""
    H, W = u.shape[-2:]
    h, w = lr_shape
    cols = (torch.arange(w, device=u.device) - w // 2) % W
    rows = (torch.arange(h, device=u.device) - h // 2) % H
    spec = torch.fft.fft(u, dim=-1, norm="forward").index_select(-1, cols)
    return torch.fft.fft(spec, dim=-2, norm="forward").index_select(-2, rows)


def slide_images(sample: np.ndarray, depth_um: np.ndarray, optics: Optics, leds: LEDArray, *,
                 margin_px: int, device: torch.device, tol: float = _TOL) -> np.ndarray:
    """Raw intensities ``(N, h, w)`` of a thin sample at per-pixel depths under spherical-wave LEDs.

    ``sample`` and ``depth_um`` are ``(H, W)`` on the hr grid of the simulated region (field plus
    ``margin_px`` raw pixels per side); the returned images are cropped to the field.
    """
    if leds.slab_thickness_mm > 0:
        raise FPMInputError("the slide simulation supports LED boards without a glass slab only")
    up = optics.upsample
    H, W = sample.shape
    if H % up or W % up:
        raise ValueError(f"hr region {H}x{W} is not a multiple of upsample {up}")
    hs, ws = H // up, W // up
    lam = optics.wavelength_um
    dx = optics.dx_hr_um
    # pupil, axial wavenumber and its residual a(k) = kz - k_c on the region's raw frequency grid
    fy = (torch.arange(hs, dtype=torch.float64, device=device) - hs // 2) / (hs * optics.dx_lr_um)
    fx = (torch.arange(ws, dtype=torch.float64, device=device) - ws // 2) / (ws * optics.dx_lr_um)
    k2 = fy[:, None] ** 2 + fx[None, :] ** 2
    pupil = k2.sqrt() <= optics.na_obj / lam + 1e-12
    kz = 2 * math.pi * (1 / lam**2 - k2).clamp_min(0).sqrt()
    k_c = 0.5 * float(kz[pupil].max() + kz[pupil].min())
    a = torch.where(pupil, kz - k_c, 0.0)
    z = torch.as_tensor(depth_um, dtype=torch.float64, device=device)
    z_lo, z_hi = float(z.min()), float(z.max())
    z_mid, z_half = 0.5 * (z_lo + z_hi), 0.5 * (z_hi - z_lo)
    n_nodes = chebyshev_node_count(float(a.abs().max()) * z_half, tol) if z_half > 0 else 1
    nodes = np.cos(math.pi * (2 * np.arange(n_nodes) + 1) / (2 * n_nodes))
    weights = (_lagrange_weights((z - z_mid) / z_half, nodes) if z_half > 0 else torch.ones_like(z)[None])
    weights = weights.to(torch.float32)
    node_transfer = torch.polar(pupil.to(torch.float32)[None].expand(n_nodes, hs, ws),
                                (a[None] * torch.as_tensor(z_mid + z_half * nodes, device=device)[:, None, None]
                                 ).to(torch.float32))
    # field stop over the outer half of the margin, and the sample
    taper = (margin_px * up) // 2
    stop = _raised_cosine(H, taper, device)[:, None] * _raised_cosine(W, taper, device)[None, :]
    base = (torch.as_tensor(sample, device=device) * stop).to(torch.complex64)
    y_um = (torch.arange(H, dtype=torch.float64, device=device) - (H - 1) / 2) * dx
    x_um = (torch.arange(W, dtype=torch.float64, device=device) - (W - 1) / 2) * dx
    dist_um = leds.distance_mm * 1000.0
    # R_i² - r_i² (r_i = R_i at the centre, z = 0) = (x² - 2x·p_x) + (y² - 2y·p_y) + (d² - D²), d = D - z:
    # accurate in float32 term by term; R_i - r_i = (R_i² - r_i²)/(R_i + r_i) keeps the phase
    # 2π·(R_i - r_i)/λ (hundreds of rad) to ~1e-4 rad without float64 images.
    z_term = (-z * (2 * dist_um - z)).to(torch.float32)
    kc_z = (k_c * z).to(torch.float32)
    h, w = hs - 2 * margin_px, ws - 2 * margin_px
    out = torch.empty((leds.n_leds, h, w), dtype=torch.float32)
    for i, (px, py) in enumerate(leds.positions_mm() * 1000.0):
        r0 = math.sqrt(px**2 + py**2 + dist_um**2)
        num = z_term + ((y_um**2 - 2 * y_um * py).to(torch.float32)[:, None]
                        + (x_um**2 - 2 * x_um * px).to(torch.float32)[None, :])
        delta_r = num / ((num + r0 * r0).clamp_min(0).sqrt() + r0)
        phase = delta_r.mul_(2 * math.pi / lam).add_(kc_z)
        v = base * torch.polar(torch.ones_like(phase), phase)
        spectrum = (_pruned_window(v[None] * weights, (hs, ws)) * node_transfer).sum(0)
        image = torch.fft.ifft2(torch.fft.ifftshift(spectrum), norm="forward")
        image = image[margin_px:margin_px + h, margin_px:margin_px + w]
        out[i] = (image.real.square() + image.imag.square()).cpu()
    return out.numpy()


def simulate_slide(size: int, seed: int, optics: Optics | None, leds: LEDArray | None, device: torch.device,
                   *, margin_px: int = 32, tilt_um_per_mm=SLIDE_DEFAULTS["tilt_um_per_mm"],
                   curvature_um_per_mm2=SLIDE_DEFAULTS["curvature_um_per_mm2"],
                   z_centre_um=SLIDE_DEFAULTS["z_centre_um"], **cell_options: Any):
    """The ``slide`` preset: ``(intensities (N, size, size), truth layers, depth, optics, leds, options)``."""
    if optics is None and leds is None:
        optics, leds = slide_optics()
    elif leds is None:
        raise FPMInputError("the slide preset needs the LED board geometry (leds=LEDArray(...)) with its optics")
    elif optics is None:
        optics = slide_optics()[0].replace(na_illum=leds.na_at())
    if leds.n_leds != optics.n_leds:
        raise FPMInputError(f"{leds.n_leds} LEDs on the board but {optics.n_leds} illumination NAs in the optics")
    if optics.pupil is not None:
        raise FPMInputError("the slide simulation models an ideal pupil; drop the optics' pupil")
    if int(margin_px) != margin_px or margin_px < 4:
        raise FPMInputError(f"margin_px must be an integer >= 4, got {margin_px!r}")
    margin_px = int(margin_px)
    cell_options.setdefault("phase_max_rad", SLIDE_DEFAULTS["phase_max_rad"])
    up = optics.upsample
    n_hr = (size + 2 * margin_px) * up
    dx = optics.dx_hr_um
    rng = np.random.default_rng([int(seed), 0])
    sample = cell_layer((n_hr, n_hr), dx, rng, **cell_options)
    coords_mm = (np.arange(n_hr) - (n_hr - 1) / 2) * dx / 1000.0
    depth = depth_map(coords_mm[:, None], coords_mm[None, :], tilt_um_per_mm=tilt_um_per_mm,
                      curvature_um_per_mm2=curvature_um_per_mm2, z_centre_um=z_centre_um)
    if not np.all(np.isfinite(depth)):
        raise FPMInputError("slide depth parameters must be finite numbers")
    with torch.no_grad():
        intensity = slide_images(sample, depth, optics, leds, margin_px=margin_px, device=device)
    crop = slice(margin_px * up, margin_px * up + size * up)
    kept, kept_depth = sample[crop, crop], depth[crop, crop]
    band = band_limit(kept[None], dx, optics.na_synthetic / optics.wavelength_um)[0]
    truth_depth = np.where(structure_mask(kept), kept_depth, np.nan)
    options = {"tilt_um_per_mm": [float(v) for v in tilt_um_per_mm],
               "curvature_um_per_mm2": float(curvature_um_per_mm2), "z_centre_um": float(z_centre_um),
               "margin_px": margin_px, "illumination": "spherical waves from led_array, per hr pixel",
               "depth_range_um": [float(kept_depth.min()), float(kept_depth.max())]}
    return intensity, band, truth_depth, optics, leds, options
