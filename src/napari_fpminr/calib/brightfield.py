"""Illumination NAs from the bright-field disks in the raw images' spectra.

Physics. Under a bright-field LED (``|na_i| < na_obj``) the unscattered light passes the pupil at
``k_dc = na_i/λ`` (the window of LED ``i`` is centred at ``-na_i/λ`` in the object spectrum, so the
object's DC lands at ``+na_i/λ`` in the pupil). The raw intensity's spectrum is the autocorrelation
of the pupil field; its cross terms between the DC and the scattered light fill two disks of the
pupil's radius ``R = na_obj/λ`` centred at ``±na_i/λ`` (cycles/µm). Their edges stand out in
``log|F{I_i}|`` and locate ``na_i`` independently of the forward model's bin snapping.

Estimator. For each bright-field image the soft two-disk template
``M_c(k) = max(σ((R-|k-c|)/w), σ((R-|k+c|)/w))`` (``w`` a fraction of a frequency bin) is scored by
the contrast of ``log|F{I}|`` inside against outside it (within a ring around the disks). The score
is continuous in ``c``: a coarse grid search around the nominal centre, then successively finer
grids, all candidates of all LEDs batched in one tensor, give ``c`` to a small fraction of a bin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..rawdata import RawData

__all__ = ["DiskFit", "brightfield_spectrum_image", "fit_brightfield_disks"]


@dataclass(frozen=True)
class DiskFit:
    """Measured bright-field disk centres.

    Attributes:
        leds: ``(M,)`` indices (in the data's order) of the LEDs measured.
        na_measured: ``(M, 2)`` illumination NA ``(na_x, na_y)`` of each, from its disk centre.
        contrast: ``(M,)`` inside-minus-outside contrast of ``log|spectrum|`` at the fit (quality).
        bin_na: one frequency bin of the raw grid in NA units (``λ/(w·dx)``), the scale of precision.
    """

    leds: np.ndarray
    na_measured: np.ndarray
    contrast: np.ndarray
    bin_na: float


def _log_spectra(intensities: np.ndarray, device: torch.device) -> torch.Tensor:
    """``log(|F{I - mean}| + eps)`` of each image, centred, with a Hann window against edge leakage."""
    imgs = torch.as_tensor(intensities, dtype=torch.float32, device=device)
    h, w = imgs.shape[-2:]
    win = torch.outer(torch.hann_window(h, periodic=False, device=device),
                      torch.hann_window(w, periodic=False, device=device))
    imgs = (imgs - imgs.mean(dim=(-2, -1), keepdim=True)) * win
    spec = torch.fft.fftshift(torch.fft.fft2(imgs), dim=(-2, -1)).abs()
    floor = spec.flatten(1).median(dim=1).values[:, None, None] * 1e-3 + 1e-12
    return torch.log(spec + floor)


def brightfield_spectrum_image(raw: RawData, leds=None) -> np.ndarray:
    """Mean ``log|spectrum|`` of bright-field images (``leds`` or all bright-field LEDs): the disk picture
    over which the widget draws LED positions. Pixel ``(r, c)`` is frequency ``((r - h//2), (c - w//2))``
    bins; an LED of NA ``na`` sits at ``(h//2 + na_y/(λ·df_y), w//2 + na_x/(λ·df_x))`` (and mirrored)."""
    idx = np.flatnonzero(raw.optics.bright_field) if leds is None else np.asarray(leds)
    if idx.size == 0:
        idx = np.arange(min(raw.n_leds, 1))
    return _log_spectra(raw.intensities[idx], torch.device("cpu")).mean(0).numpy()


def _scores(logs: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, radius_px: tuple[float, float],
            soft_px: float) -> torch.Tensor:
    """Contrast scores ``(M, K)`` of the two-disk template at candidate centres ``(M, K)`` (pixels)."""
    m, h, w = logs.shape
    ry, rx = radius_px
    fy = (torch.arange(h, device=logs.device, dtype=torch.float32) - h // 2)[None, None, :, None]
    fx = (torch.arange(w, device=logs.device, dtype=torch.float32) - w // 2)[None, None, None, :]
    cy4, cx4 = cy[:, :, None, None], cx[:, :, None, None]
    # distances in units of the radius (elliptic when the bins differ along x and y)
    d1 = torch.sqrt(((fy - cy4) / ry) ** 2 + ((fx - cx4) / rx) ** 2)
    d2 = torch.sqrt(((fy + cy4) / ry) ** 2 + ((fx + cx4) / rx) ** 2)
    r_px = 0.5 * (ry + rx)
    band = soft_px / r_px  # a ring band of ``soft_px`` pixels, in units of the radius

    def ring(d, lo, hi):  # soft indicator of lo < d < hi (radius units)
        return torch.sigmoid((d - lo) / (0.5 * band) * 0.5) * torch.sigmoid((hi - d) / (0.5 * band) * 0.5)

    # edge contrast: a band just inside each circle minus a band just outside it, counted only where
    # that circle's edge is not covered by the other disk (no edge there)
    cover1 = torch.sigmoid((1.0 - d2) / band * 2.0)
    cover2 = torch.sigmoid((1.0 - d1) / band * 2.0)
    kernel = ((ring(d1, 1.0 - 3 * band, 1.0) - ring(d1, 1.0, 1.0 + 3 * band)) * (1.0 - cover1)
              + (ring(d2, 1.0 - 3 * band, 1.0) - ring(d2, 1.0, 1.0 + 3 * band)) * (1.0 - cover2))
    weight = (ring(d1, 1.0 - 3 * band, 1.0) * (1.0 - cover1) + ring(d2, 1.0 - 3 * band, 1.0) * (1.0 - cover2))
    return (logs[:, None] * kernel).sum(dim=(-2, -1)) / weight.sum(dim=(-2, -1)).clamp_min(1e-6)


def _search(logs, centre, radius_px, half_px, step_px, soft_px, chunk):
    """Grid search of the best centre within ``±half_px`` of ``centre`` ``(M, 2)`` (y, x pixels)."""
    offs = torch.arange(-half_px, half_px + 1e-9, step_px, dtype=torch.float32)
    gy, gx = torch.meshgrid(offs, offs, indexing="ij")
    gy, gx = gy.reshape(-1), gx.reshape(-1)
    best = torch.empty_like(centre)
    best_score = torch.empty(centre.shape[0])
    for start in range(0, centre.shape[0], chunk):
        sl = slice(start, min(start + chunk, centre.shape[0]))
        cy = centre[sl, 0:1] + gy[None]
        cx = centre[sl, 1:2] + gx[None]
        s = _scores(logs[sl], cy, cx, radius_px, soft_px)
        k = s.argmax(dim=1)
        rows = torch.arange(k.numel())
        best[sl, 0], best[sl, 1] = cy[rows, k], cx[rows, k]
        best_score[sl] = s[rows, k]
    return best, best_score


def fit_brightfield_disks(raw: RawData, *, search_na: float | None = None, min_na_fraction: float = 0.15,
                          max_na_fraction: float = 0.92) -> DiskFit:
    """Measure the illumination NA of every bright-field LED from its spectrum's disk pair.

    LEDs whose nominal NA is below ``min_na_fraction·na_obj`` (the two disks nearly coincide and
    barely move with ``c``) or above ``max_na_fraction·na_obj`` (the disk edge meets the image's
    own band limit) are not measured. ``search_na``: half-width of the search around the nominal NA
    (default: 0.25·na_obj).
    """
    opt = raw.optics
    h, w = raw.lr_shape
    lam = opt.wavelength_um
    df_y, df_x = 1.0 / (h * opt.dx_lr_um), 1.0 / (w * opt.dx_lr_um)
    bin_na = lam * max(df_x, df_y)
    na_abs = opt.na_illum_abs
    use = np.flatnonzero((na_abs > min_na_fraction * opt.na_obj) & (na_abs < max_na_fraction * opt.na_obj))
    if use.size == 0:
        return DiskFit(use, np.zeros((0, 2)), np.zeros(0), bin_na)
    radius_px = (opt.na_obj / lam / df_y, opt.na_obj / lam / df_x)
    search_na = 0.25 * opt.na_obj if search_na is None else float(search_na)
    half_px = search_na / lam / min(df_x, df_y)
    logs = _log_spectra(raw.intensities[use], torch.device("cpu"))
    centre = torch.as_tensor(np.stack([opt.na_illum[use, 1] / lam / df_y, opt.na_illum[use, 0] / lam / df_x],
                                      axis=1), dtype=torch.float32)
    chunk = max(1, int(2e7 // (h * w * 121)))
    with torch.no_grad():
        step = max(half_px / 5.0, 0.25)
        centre, score = _search(logs, centre, radius_px, math.ceil(half_px / step) * step, step, 0.5, chunk)
        while step > 0.02:
            half, step = 1.5 * step, step / 3.0
            centre, score = _search(logs, centre, radius_px, half, step, 0.5, chunk)
    c = centre.numpy().astype(np.float64)
    na = np.stack([c[:, 1] * df_x * lam, c[:, 0] * df_y * lam], axis=1)
    return DiskFit(use, na, score.numpy().astype(np.float64), bin_na)
