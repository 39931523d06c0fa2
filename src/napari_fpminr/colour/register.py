"""Registration of the colour channels: lateral sub-pixel shifts, best focus, white level.

* :func:`phase_correlation` — the translation between two images from their cross-power spectrum
  (``whiten`` = 1, the default: classic phase correlation, which weighs every frequency alike,
  so that channels whose stains give different contrast still agree on the edges; plain
  cross-correlation (0) was measured 0.2-0.4 raw px off between stained channels. Give
  ``cutoff``: whitening the empty frequencies beyond the band was measured 0.5 px off on
  band-limited crops): integer peak, then refined on a 1/``upsample`` px grid by a
  matrix-multiply DFT of the cross-power spectrum around the peak (Guizar-Sicairos, Thurman & Fienup, Opt. Lett. 33, 156,
  2008). Returns ``(dy, dx)`` px such that ``moving(x) ≈ reference(x - (dy, dx))``: shifting
  ``moving`` by ``-(dy, dx)`` aligns it onto ``reference``.
* :func:`fourier_shift` — band-limited (exact for a periodic, band-limited field) sub-pixel shift.
* :func:`register_fields` — the shift between two channels' complex fields, from their
  amplitude-weighted phase gradients (:func:`phase_gradient`; why not the phases: its docstring).
* what one shift cannot register (a field-varying, affine misregistration): :mod:`.affine`.
* :func:`best_focus` — the depth at which a stack of complex fields is sharpest over the whole
  field: the concentration of the complex gradient (``volume.edge_sparsity`` with one patch),
  refined to sub-plane depth by a parabola through the best plane and its neighbours.
* :func:`white_levels` — the bare-glass level of each channel: the mode of each channel over the
  glass, taken as the brightest ``top_fraction`` of the pixels of all channels together (glass
  is the brightest thing on a transmission slide, in every channel). :func:`white_level`, one
  channel's histogram mode, finds the glass only where it is the most frequent value: on the
  dense UConn smear it found the red cells instead (green: cells 1.42, glass 2.61, mode 1.32).
"""

from __future__ import annotations

import numpy as np
import torch

from ..volume import _refine_peak, edge_sparsity

__all__ = ["OBSERVABLES", "best_focus", "fourier_shift", "phase_correlation", "phase_gradient", "register_fields",
           "white_level", "white_levels"]


def _window(shape: tuple[int, int], alpha: float = 0.25) -> np.ndarray:
    """Separable Tukey window (cosine tapers over ``alpha/2`` of each side)."""
    def tukey(n: int) -> np.ndarray:
        x = np.linspace(0.0, 1.0, n)
        w = np.ones(n)
        edge = alpha / 2
        lo, hi = x < edge, x > 1 - edge
        w[lo] = 0.5 * (1 + np.cos(np.pi * (x[lo] / edge - 1)))
        w[hi] = 0.5 * (1 + np.cos(np.pi * ((x[hi] - 1) / edge + 1)))
        return w
    return tukey(shape[0])[:, None] * tukey(shape[1])[None, :]


def _upsampled_dft(data: np.ndarray, size: int, factor: int, offset: tuple[float, float]) -> np.ndarray:
    """Inverse DFT of ``data`` (an uncentred spectrum) on a ``size``² grid of step 1/``factor`` px
    whose first sample sits at ``offset`` px."""
    H, W = data.shape
    fy = np.fft.fftfreq(H)[:, None]
    fx = np.fft.fftfreq(W)[None, :]
    ys = offset[0] + np.arange(size) / factor
    xs = offset[1] + np.arange(size) / factor
    ky = np.exp(2j * np.pi * ys[:, None] * fy.T)  # (size, H)
    kx = np.exp(2j * np.pi * fx.T * xs[None, :])  # (W, size)
    return ky @ data @ kx


def phase_correlation(reference: np.ndarray, moving: np.ndarray, upsample: int = 100,
                      window: bool = True, whiten: float = 1.0, cutoff: float | None = None,
                      low_cut: float = 0.0) -> tuple[float, float]:
    """Sub-pixel translation ``(dy, dx)`` (px) of ``moving`` relative to ``reference`` (module docstring).

    Both are real ``(H, W)`` images (amplitudes or intensities), or ``(C, H, W)`` stacks of ``C``
    images of one scene (the two components of a gradient), whose cross-power spectra are summed;
    their means are removed and, with ``window``, a Tukey window tapers the borders (non-periodic
    fields). ``cutoff`` (cycles/px) leaves out the frequencies beyond the images' band, which carry
    only the window's and the borders' artefacts; ``low_cut`` (cycles/px) the slow background below it.
    """
    a = np.asarray(reference, np.float64)
    b = np.asarray(moving, np.float64)
    if a.shape != b.shape or a.ndim not in (2, 3):
        raise ValueError(f"phase correlation needs two images of one shape, got {a.shape} and {b.shape}")
    if a.ndim == 2:
        a, b = a[None], b[None]
    H, W = a.shape[-2:]
    w = _window((H, W)) if window else 1.0
    fa = np.fft.fft2((a - a.mean(axis=(1, 2), keepdims=True)) * w)
    fb = np.fft.fft2((b - b.mean(axis=(1, 2), keepdims=True)) * w)
    cross = np.sum(fb * np.conj(fa), axis=0)
    if cutoff is not None or low_cut > 0:
        k = np.hypot(np.fft.fftfreq(H)[:, None], np.fft.fftfreq(W)[None, :])
        cross = cross * ((k <= (np.inf if cutoff is None else cutoff)) & (k >= low_cut))
    mag = np.abs(cross)
    cross /= np.maximum(mag, 1e-12 * mag.max() + 1e-300) ** whiten
    corr = np.fft.ifft2(cross).real
    peak = np.array(np.unravel_index(int(np.argmax(corr)), corr.shape), dtype=np.float64)
    peak = np.where(peak > np.array([H, W]) // 2, peak - np.array([H, W]), peak)
    factor = int(upsample)
    if factor > 1:
        size = int(np.ceil(factor * 1.5))
        start = peak - (size // 2) / factor
        fine = _upsampled_dft(cross, size, factor, (start[0], start[1])).real
        iy, ix = np.unravel_index(int(np.argmax(fine)), fine.shape)
        peak = start + np.array([iy, ix]) / factor
    return float(peak[0]), float(peak[1])


def fourier_shift(field: torch.Tensor, dy_px: float, dx_px: float) -> torch.Tensor:
    """``field (..., H, W)`` shifted by ``(dy, dx)`` px: ``out(x) = field(x - (dy, dx))`` (periodic)."""
    H, W = field.shape[-2:]
    if dy_px == 0 and dx_px == 0:
        return field
    dev = field.device
    fy = torch.fft.fftfreq(H, device=dev, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(W, device=dev, dtype=torch.float64)[None, :]
    ramp = torch.polar(torch.ones_like(fy * fx), -2 * np.pi * (fy * dy_px + fx * dx_px)).to(torch.complex64)
    out = torch.fft.ifft2(torch.fft.fft2(field.to(torch.complex64)) * ramp)
    return out if field.is_complex() else out.real


def best_focus(fields: torch.Tensor, z_um: np.ndarray, border: int = 0) -> tuple[float, np.ndarray]:
    """Depth of best focus of complex fields ``(Z, H, W)`` at ``z_um`` and the score per plane.

    The score is the whole field's gradient concentration (``edge_sparsity`` over one patch, after
    leaving out ``border`` px on each side); the depth is the parabola vertex through the best plane
    and its neighbours (the best plane itself at the ends of the range).
    """
    f = fields
    if border:
        f = f[:, border:-border, border:-border]
    H, W = f.shape[-2:]
    score = edge_sparsity(f, (min(H, W) // 2) * 2, max(H, W))[:, 0, 0]
    depth, _ = _refine_peak(score[:, None, None], np.asarray(z_um, np.float64))
    return float(depth.reshape(-1)[0]), score.cpu().numpy()


def white_level(intensity: np.ndarray, bins: int = 512) -> float:
    """The bare-glass level of an intensity image: the mode of its smoothed histogram, refined by a parabola."""
    x = np.asarray(intensity, np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return 1.0
    lo, hi = np.percentile(x, [1.0, 99.9])
    if not hi > lo:
        return float(np.median(x))
    counts, edges = np.histogram(x, bins=bins, range=(lo, hi))
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    smooth = np.convolve(counts, kernel / kernel.sum(), mode="same")
    k = int(np.argmax(smooth))
    centres = 0.5 * (edges[1:] + edges[:-1])
    if 0 < k < bins - 1:
        s0, s1, s2 = smooth[k - 1], smooth[k], smooth[k + 1]
        den = s0 - 2 * s1 + s2
        if den < 0:
            return float(centres[k] + 0.5 * (s0 - s2) / den * (centres[1] - centres[0]))
    return float(centres[k])


def phase_gradient(field: np.ndarray) -> np.ndarray:
    """``a·∇φ / mean(a)``, ``(2, H, W)`` (``(y, x)`` components), of a complex field ``o = a·exp(iφ)`` ``(H, W)``.

    The local tilt of the wavefront (what differential phase contrast images), computed without unwrapping as
    ``Im(conj(o)·∇o) / |o|`` (``Im(conj(o)·∇o) = a²·∇φ``, the transverse energy flux), so that

    * it is weighted by the amplitude: it vanishes where no light passes (``a → 0``), where a reconstructed phase
      means nothing (the UConn smear's absorbing dots come out +0.29 rad in red and -0.34 rad in green);
    * the derivative weighs each spatial frequency by itself: the correlation rests on the structures' outlines,
      not on the slow phase background, which on real data follows the illumination calibration of each
      channel (the pupil-edge LEDs carry the low-frequency phase) rather than the sample;
    * it is the phase's, not the amplitude's: a stain that absorbs in one channel and not in another does not
      enter, and for a weak object it is linear in the phase, which every channel shares (thickness, ×1/λ).

    Central differences (a local operator: no ringing at a crop's border); the field is oversampled (band ≤
    0.3 cycles/px), so they are close to the exact derivative.
    """
    f = np.asarray(field, np.complex128)
    a = np.abs(f)
    scale = max(float(np.mean(a)), 1e-30)
    flux = np.stack([np.imag(np.conj(f) * g) for g in np.gradient(f)])
    return flux / np.maximum(a, 1e-6 * scale) / scale


def _wrapped_phase(field: np.ndarray) -> np.ndarray:
    f = np.asarray(field, np.complex128)
    return np.angle(f * np.conj(np.mean(f)))


#: what :func:`register_fields` correlates, and up to which share of the band: ``"phase_gradient"``
#: (:func:`phase_gradient`, the default) or ``"phase"`` (the wrapped phase, the first version's observable, kept to
#: measure against). The gradient weighs each frequency by itself, most the outer part of the band, where the
#: smallest synthetic aperture is covered by the fewest LED windows (presumably why the channels' reconstructions
#: agree least there): on the simulated slide's 64 hr px patches the red patch shifts scatter 0.05 raw px about their mean correlated up
#: to the band's edge (and pass for a 0.17 raw px affine), 0.03-0.04 up to 0.6-0.9 of it; on the UConn smear
#: both agree
OBSERVABLES = {"phase_gradient": (phase_gradient, 0.75), "phase": (_wrapped_phase, 1.0)}


def register_fields(reference: np.ndarray, moving: np.ndarray, band_cycles_per_px: float,
                    iterations: int = 4, observable: str = "phase_gradient") -> tuple[float, float]:
    """Shift ``(dy, dx)`` (px) of complex field ``moving`` relative to ``reference`` (both in focus).

    Correlates the amplitude-weighted phase gradients (:func:`phase_gradient`, both components), not the
    amplitudes nor the phases themselves. Two channels of one slide share their structures' thickness and
    outlines, not their contrasts:

    * a stain absorbs differently in each channel (the red channel sees the nuclei, the green one nuclei and
      cytoplasm): amplitude correlation was measured 0.2-0.4 raw px off on the simulated stained slide;
    * the phase itself is dominated by its slow variations, and those are no geometric anchor on real data.
      On the UConn smear the strongly absorbing dots (amplitude 0.7 of the field's median) come out phase-bright in red
      and phase-dark in green and blue, and a channel's phase moves against its own structures when its
      illumination calibration changes (green's calibrated phase correlates 0.14 raw px away from its
      uncalibrated one). Correlating phases, red against green moved by 0.65 raw px between the calibrated and
      the uncalibrated green, by 0.4-1.3 raw px on half-field patches, mis-locked 1.2 raw px on a central 64 px
      crop and fitted a spurious, anisotropic field-varying map (red "magnified" 0.6 % along y). The phase
      gradients move by 0.06 raw px there, lock on the crop within 0.08 raw px of the central LED's raw
      frames (which no reconstruction or calibration touches), and find the field-varying part those frames
      show: isotropic scales, red smaller (0.04 %; frames 0.09 %) and blue larger (0.12 %; frames 0.08 %)
      than green (lateral colour).

    ``observable="phase"`` correlates the wrapped phases instead (the first version; for comparison).

    Plain cross-correlation (no whitening) within the band ``band_cycles_per_px`` (the gradients: its inner
    three quarters, :data:`OBSERVABLES`), the slowest twentieth of it left out (the illumination's slow
    background). The border window pulls a single estimate towards zero
    shift (its own correlation peaks there: 0.70 px found for 0.80 px on the simulated slide), so the estimate
    is refined: ``moving`` is shifted back by it and the remainder measured again, until it is below 0.01 px
    (at the true shift the two windowed images agree and the window no longer biases anything).
    """
    image, share = OBSERVABLES[observable]
    ref = image(reference)
    mov = torch.as_tensor(np.asarray(moving, np.complex64))
    total = np.zeros(2)
    for _ in range(iterations):
        aligned = fourier_shift(mov, -total[0], -total[1]).numpy()
        step = phase_correlation(ref, image(aligned), whiten=0.0, cutoff=share * band_cycles_per_px,
                                 low_cut=band_cycles_per_px / 20)
        total += step
        if max(abs(v) for v in step) < 0.01:
            break
    return float(total[0]), float(total[1])


def white_levels(intensity: np.ndarray, top_fraction: float = 0.15) -> np.ndarray:
    """Bare-glass level of each channel of ``intensity (C, H, W)`` (see the module docstring)."""
    x = np.asarray(intensity, np.float64)
    flat = x.reshape(x.shape[0], -1)
    med = np.median(flat, axis=1, keepdims=True)
    lum = (flat / np.maximum(med, 1e-12)).mean(axis=0)
    ok = np.isfinite(lum)
    cut = np.quantile(lum[ok], 1.0 - top_fraction)
    glass = ok & (lum >= cut)
    # the mode over the glass, not its median: the brightest pixels also hold the cells' bright rims
    return np.array([white_level(row[glass]) for row in flat])
