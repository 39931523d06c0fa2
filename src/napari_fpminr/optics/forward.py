"""Batched FPM forward model (shared/DESIGN.md §1).

For LED ``i`` and defocus ``z`` (µm) the predicted raw intensity is

    I_i = | F^-1{ W_i[ F{o_z} ] · P · exp(i · kz · z) } |^2

* ``F`` is the centred 2D DFT with ``norm="forward"`` on the hr grid and ``F^-1`` the centred
  inverse DFT with ``norm="forward"`` on the raw grid, so a transparent sample (``o = 1``)
  gives ``I = 1`` under every bright-field LED: amplitudes are reported relative to the
  bright-field background.
* ``W_i`` crops the raw-sized window of the hr spectrum centred at ``-(na_x, na_y)/λ``.
  Window centres sit on the nearest hr frequency bin ``-n_i·Δf`` (``Δf = 1/(w·dx_lr)``).
* ``P`` is the pupil: the disk ``|k| <= na_obj/λ`` times an optional complex aberration.
* ``kz = 2π·sqrt(1/λ² - |k|²)`` rad/µm inside the pupil, 0 outside; with this sign a thin
  sample at depth ``z0`` is in focus in the reconstruction at ``z = z0``.

Illumination off the frequency grid (``subpixel=True``, the default). Write the LED's tilt
``k_i = (na_x, na_y)/λ = n_i·Δf + δ_i`` with integer ``n_i`` and the sub-bin residual
``|δ_i| <= Δf/2`` per axis. For a sample that is periodic on the hr grid (what the DFT
assumes) the tilted exit field has plane-wave components at ``m·Δf + k_i``; the camera sees
those inside the pupil, so with ``q = m + n_i``

    g_i(x) = exp(i2π·δ_i·x) · Σ_q O[q - n_i] · P(q·Δf + δ_i) · exp(i·kz(q·Δf + δ_i)·z) · exp(i2π·q·Δf·x)

The first factor is a global phase ramp that leaves ``|g_i|²`` unchanged; the sum is the
snapped window ``O[q - n_i]`` times the transfer function evaluated at the *shifted*
coordinates ``q·Δf + δ_i``. This is exact (not an interpolation): the disk and the defocus are
analytic and are evaluated at the shifted coordinates per LED (:meth:`FPMForward.led_transfer`).
A given complex pupil array (a calibrated or recovered aberration, sampled on the raw grid) is
kept on its bins: only its disk edge and the defocus move with ``δ_i``; bins that the shifted
disk adds just outside the nominal disk take the value of the nearest bin inside it
(:meth:`FPMForward.extend_pupil`). That is exact for a pure disk and first-order in ``δ_i`` (at
most half a bin) for aberrations. ``subpixel=False`` gives the snapped model (the reference
implementation's), and LEDs whose tilts are all on the grid cost nothing extra.

All LEDs (or a subset) and several z-planes are handled in one call: the windows are gathered
with one advanced-indexing operation and transformed by one batched inverse FFT.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .system import Optics


def frequency_grid(shape: tuple[int, int], dx_um: float) -> tuple[np.ndarray, np.ndarray]:
    """Centred spatial-frequency grids ``(fy, fx)`` in cycles/µm for an image of ``shape``."""
    h, w = shape
    fy = (np.arange(h) - h // 2) / (h * dx_um)
    fx = (np.arange(w) - w // 2) / (w * dx_um)
    return np.meshgrid(fy, fx, indexing="ij")


def pupil_support(optics: Optics, lr_shape: tuple[int, int]) -> np.ndarray:
    """Boolean disk ``|k| <= na_obj/λ`` on the raw image's centred frequency grid."""
    fy, fx = frequency_grid(lr_shape, optics.dx_lr_um)
    return np.hypot(fx, fy) <= optics.na_obj / optics.wavelength_um + 1e-12


def kz_map(optics: Optics, lr_shape: tuple[int, int]) -> np.ndarray:
    """Axial wavenumber ``2π·sqrt(1/λ² - |k|²)`` (rad/µm) inside the pupil, 0 outside."""
    fy, fx = frequency_grid(lr_shape, optics.dx_lr_um)
    arg = 1.0 / optics.wavelength_um**2 - (fx**2 + fy**2)
    kz = 2.0 * math.pi * np.sqrt(np.clip(arg, 0.0, None))
    return np.where(pupil_support(optics, lr_shape), kz, 0.0)


def subbin_residuals(optics: Optics, lr_shape: tuple[int, int]) -> np.ndarray:
    """``(N, 2)`` residual ``δ_i = k_i - n_i·Δf`` (``(δ_y, δ_x)``, cycles/µm) of each LED tilt off the bin grid.

    ``k_i = (na_y, na_x)/λ``; ``n_i`` is the bin :func:`window_offsets` snaps to (``-offset``),
    so ``|δ_i| <= Δf/2`` per axis. The transfer function of LED ``i`` is ``P(k + δ_i)``.
    """
    h, w = lr_shape
    df = np.array([1.0 / (h * optics.dx_lr_um), 1.0 / (w * optics.dx_lr_um)])
    k = optics.na_illum[:, ::-1] / optics.wavelength_um  # (k_y, k_x)
    return k + window_offsets(optics, lr_shape) * df[None, :]


def window_offsets(optics: Optics, lr_shape: tuple[int, int]) -> np.ndarray:
    """Integer ``(row, col)`` offset of each LED window centre from the hr spectrum centre."""
    h, w = lr_shape
    df_y = 1.0 / (h * optics.dx_lr_um)
    df_x = 1.0 / (w * optics.dx_lr_um)
    k_y = -optics.na_illum[:, 1] / optics.wavelength_um
    k_x = -optics.na_illum[:, 0] / optics.wavelength_um
    return np.stack([np.rint(k_y / df_y), np.rint(k_x / df_x)], axis=1).astype(np.int64)


class FPMForward:
    """Batched FPM forward operator for one optical system and raw image size.

    Args:
        optics: the microscope; ``optics.upsample`` fixes the hr grid.
        lr_shape: ``(h, w)`` of the raw images.
        device: torch device for every tensor this operator creates.
        subpixel: evaluate each LED's transfer function at its sub-bin tilt (exact; see the
            module docstring). ``False`` snaps every LED to the nearest bin.

    Attributes (besides the inputs): ``hr_shape``; ``window_top``/``window_left`` (snapped
    window corners); ``support``, ``pupil``, ``kz`` (nominal, unshifted); ``led_shift`` ``(N, 2)``
    float64 tensor of ``δ_i`` (zero when snapped); ``on_grid`` (no LED needs a shifted transfer).
    """

    _ON_GRID_TOL = 1e-6  # |δ| below this fraction of a bin counts as on the grid

    def __init__(self, optics: Optics, lr_shape: tuple[int, int], device: torch.device | str = "cpu",
                 subpixel: bool = True):
        self.optics = optics
        self.lr_shape = (int(lr_shape[0]), int(lr_shape[1]))
        self.device = torch.device(device)
        h, w = self.lr_shape
        up = optics.upsample
        self.hr_shape = (h * up, w * up)
        H, W = self.hr_shape

        offsets = window_offsets(optics, self.lr_shape)
        top = H // 2 + offsets[:, 0] - h // 2
        left = W // 2 + offsets[:, 1] - w // 2
        bad = (top < 0) | (left < 0) | (top + h > H) | (left + w > W)
        if bad.any():
            worst = float(optics.na_illum_abs[bad].max())
            raise ValueError(
                f"LED windows fall outside the hr spectrum (illumination NA up to {worst:.3f}) "
                f"with upsample={up}; use upsample >= {optics.required_upsample()}"
            )
        self.window_top = torch.as_tensor(top, device=self.device)
        self.window_left = torch.as_tensor(left, device=self.device)
        self._rows = self.window_top[:, None] + torch.arange(h, device=self.device)[None, :]
        self._cols = self.window_left[:, None] + torch.arange(w, device=self.device)[None, :]

        support = pupil_support(optics, self.lr_shape)
        self.support = torch.as_tensor(support, device=self.device)
        if optics.pupil is not None:
            if optics.pupil.shape != self.lr_shape:
                raise ValueError(
                    f"pupil shape {optics.pupil.shape} does not match raw image shape {self.lr_shape}"
                )
            pupil = optics.pupil * support
        else:
            pupil = support.astype(np.complex64)
        self.pupil = torch.as_tensor(pupil.astype(np.complex64), device=self.device)
        self.kz = torch.as_tensor(kz_map(optics, self.lr_shape).astype(np.float32), device=self.device)

        self.subpixel = bool(subpixel)
        shift = subbin_residuals(optics, self.lr_shape) if self.subpixel else np.zeros((optics.n_leds, 2))
        df = np.array([1.0 / (h * optics.dx_lr_um), 1.0 / (w * optics.dx_lr_um)])
        self.on_grid = bool(np.all(np.abs(shift) <= self._ON_GRID_TOL * df))
        if self.on_grid:
            shift = np.zeros_like(shift)
        self.led_shift = torch.as_tensor(shift, dtype=torch.float64, device=self.device)
        fy, fx = frequency_grid(self.lr_shape, optics.dx_lr_um)
        self._fy = torch.as_tensor(fy, dtype=torch.float64, device=self.device)
        self._fx = torch.as_tensor(fx, dtype=torch.float64, device=self.device)
        self._nearest = torch.as_tensor(_nearest_support_index(support), device=self.device)

    @property
    def n_leds(self) -> int:
        return self.optics.n_leds

    # ---- building blocks ----------------------------------------------------------------
    @staticmethod
    def spectrum(field_hr: torch.Tensor) -> torch.Tensor:
        """Centred spectrum ``fftshift(fft2(o, norm="forward"))`` over the last two axes."""
        return torch.fft.fftshift(torch.fft.fft2(field_hr, norm="forward"), dim=(-2, -1))

    @staticmethod
    def inverse_spectrum(spectrum: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`spectrum` on whatever grid ``spectrum`` lives on."""
        return torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1)), norm="forward")

    def defocus(self, z_um: torch.Tensor | float | Sequence[float]) -> torch.Tensor:
        """Defocus transfer ``exp(i·kz·z)`` with shape ``(Z, h, w)`` for ``Z`` depths (µm)."""
        z = torch.as_tensor(z_um, dtype=torch.float32, device=self.device).reshape(-1)
        return torch.polar(torch.ones_like(self.kz), self.kz[None] * z[:, None, None])

    def transfer(self, z_um, pupil: torch.Tensor | None = None) -> torch.Tensor:
        """Coherent transfer function ``P·exp(i·kz·z)``, shape ``(Z, h, w)``."""
        return (self.pupil if pupil is None else pupil) * self.defocus(z_um)

    def shifted_ctf(self, leds=None, box: tuple[int, int, int, int] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-LED disk and axial wavenumber at the shifted coordinates ``k + δ_i``.

        Returns ``(support (n, h, w) bool, kz (n, h, w) float32 rad/µm, 0 outside the disk)``;
        computed on demand (nothing per LED is stored), so callers may work in LED chunks.
        ``box=(r0, r1, c0, c1)`` restricts both to those rows and columns of the centred grid.
        """
        idx = self.led_index(leds)
        shift = self.led_shift[idx]
        r0, r1, c0, c1 = box if box is not None else (0, self.lr_shape[0], 0, self.lr_shape[1])
        fy = self._fy[r0:r1, c0:c1][None] + shift[:, 0, None, None]
        fx = self._fx[r0:r1, c0:c1][None] + shift[:, 1, None, None]
        k2 = fy.square() + fx.square()
        lam = self.optics.wavelength_um
        support = k2.sqrt() <= self.optics.na_obj / lam + 1e-12
        kz = 2.0 * math.pi * (1.0 / lam**2 - k2).clamp_min(0.0).sqrt()
        return support, torch.where(support, kz, 0.0).to(torch.float32)

    def extend_pupil(self, pupil: torch.Tensor) -> torch.Tensor:
        """A pupil array ``(..., h, w)`` continued just outside its nominal disk by its nearest bin inside.

        The shifted disks of sub-bin LEDs reach up to one bin beyond the nominal disk; the
        aberration there is taken from the nearest bin inside (first order in ``δ``).
        """
        flat = pupil.reshape(*pupil.shape[:-2], -1)
        return flat[..., self._nearest].reshape(pupil.shape)

    def led_transfer(self, z_um, leds=None, pupil: torch.Tensor | None = None) -> torch.Tensor:
        """Per-LED transfer ``A(k)·P_disk(k + δ_i)·exp(i·kz(k + δ_i)·z)``, shape ``(Z, n, h, w)``.

        ``pupil``: complex ``(h, w)`` or per-plane ``(Z, h, w)`` pupil on the nominal disk (the
        optics' pupil by default); its values are the aberration ``A`` (kept on their bins,
        continued by :meth:`extend_pupil`). On the grid (or snapped) this is
        :meth:`transfer` broadcast over the LEDs (an expanded view, no copy).
        """
        idx = self.led_index(leds)
        if self.on_grid:
            t = self.transfer(z_um, pupil)[:, None]
            return t.expand(t.shape[0], idx.numel(), *self.lr_shape)
        z = torch.as_tensor(z_um, dtype=torch.float32, device=self.device).reshape(-1)
        support, kz = self.shifted_ctf(idx)
        out = torch.polar(support.to(torch.float32)[None], kz[None] * z[:, None, None, None])
        if pupil is None and self.optics.pupil is None:
            return out
        aberration = self.extend_pupil(self.pupil if pupil is None else pupil.to(torch.complex64))
        return out * (aberration[None, None] if aberration.ndim == 2 else aberration[:, None])

    def led_index(self, leds: torch.Tensor | np.ndarray | Sequence[int] | None) -> torch.Tensor:
        if leds is None:
            return torch.arange(self.n_leds, device=self.device)
        return torch.as_tensor(np.asarray(leds) if not torch.is_tensor(leds) else leds,
                               dtype=torch.long, device=self.device).reshape(-1)

    def windows(self, spectrum: torch.Tensor, leds=None) -> torch.Tensor:
        """Gather the LED windows: ``(..., H, W)`` spectrum -> ``(..., N, h, w)``."""
        idx = self.led_index(leds)
        rows = self._rows[idx][:, :, None]
        cols = self._cols[idx][:, None, :]
        return spectrum[..., rows, cols]

    # ---- forward model ------------------------------------------------------------------
    def lowres_fields(self, field_hr: torch.Tensor, z_um, leds=None, pupil: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """Complex raw-grid fields for every LED: ``(Z, H, W)`` + ``Z`` depths -> ``(Z, N, h, w)``.

        ``field_hr`` may also be a single ``(H, W)`` field used at every depth in ``z_um``.
        """
        if field_hr.shape[-2:] != self.hr_shape:
            raise ValueError(f"hr field has shape {tuple(field_hr.shape[-2:])}, expected {self.hr_shape}")
        field_hr = field_hr.to(torch.complex64) if not field_hr.is_complex() else field_hr
        spec = self.spectrum(field_hr if field_hr.ndim == 3 else field_hr[None])
        win = self.windows(spec, leds)  # (Zf, N, h, w)
        if self.on_grid:
            return self.inverse_spectrum(win * self.transfer(z_um, pupil)[:, None])
        return self.inverse_spectrum(win * self.led_transfer(z_um, leds, pupil))

    def intensities(self, field_hr: torch.Tensor, z_um, leds=None, pupil=None) -> torch.Tensor:
        """Predicted raw intensities ``(Z, N, h, w)``."""
        f = self.lowres_fields(field_hr, z_um, leds, pupil)
        return f.real.square() + f.imag.square()

    def amplitudes(self, field_hr: torch.Tensor, z_um, leds=None, pupil=None) -> torch.Tensor:
        """Predicted raw amplitudes ``sqrt(I)``, shape ``(Z, N, h, w)`` (differentiable at 0)."""
        return self.lowres_fields(field_hr, z_um, leds, pupil).abs()


def _nearest_support_index(support: np.ndarray) -> np.ndarray:
    """Flat index, per bin, of the nearest bin inside ``support`` (itself when inside).

    Only the two-bin ring around the disk is searched (shifted disks move by at most half a bin
    per axis); bins further out keep their own index (the pupil is zero there anyway).
    """
    h, w = support.shape
    index = np.arange(h * w)
    inside = support.ravel()
    if not inside.any():
        return index
    rows, cols = np.divmod(index, w)
    pad = np.pad(support, 2)
    near = np.zeros_like(support)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            near |= pad[2 + dy:2 + dy + h, 2 + dx:2 + dx + w]
    ring = np.flatnonzero(near.ravel() & ~inside)
    if ring.size == 0:
        return index
    # candidates: the support's boundary (inside bins with an outside 8-neighbour)
    pad1 = np.pad(support, 1)
    interior = np.ones_like(support)
    for dy in range(-1, 2):
        for dx in range(-1, 2):
            interior &= pad1[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
    edge = np.flatnonzero(inside & ~interior.ravel())
    step = max(1, int(2e7 // edge.size))
    for s in range(0, ring.size, step):
        r = ring[s:s + step]
        d2 = (rows[r, None] - rows[None, edge]) ** 2 + (cols[r, None] - cols[None, edge]) ** 2
        index[r] = edge[np.argmin(d2, axis=1)]
    return index


def angular_spectrum(field: torch.Tensor, z_um, wavelength_um: float, dx_um: float,
                     na_limit: float | None = None) -> torch.Tensor:
    """Propagate ``field`` (``(..., H, W)``) by ``z_um`` with the angular spectrum method.

    Multiplies the spectrum by ``exp(i·2π·sqrt(1/λ² - |k|²)·z)``, dropping evanescent waves
    (and everything beyond ``na_limit/λ`` when given). Positive ``z`` = forward propagation.
    """
    shape = tuple(field.shape[-2:])
    fy, fx = frequency_grid(shape, dx_um)
    k2 = fx**2 + fy**2
    cutoff = (1.0 if na_limit is None else na_limit) / wavelength_um
    keep = np.hypot(fx, fy) <= cutoff
    kz = 2 * math.pi * np.sqrt(np.clip(1.0 / wavelength_um**2 - k2, 0.0, None))
    kz_t = torch.as_tensor(np.where(keep, kz, 0.0).astype(np.float32), device=field.device)
    keep_t = torch.as_tensor(keep, device=field.device)
    h = torch.polar(keep_t.float(), kz_t * float(z_um))
    spec = FPMForward.spectrum(field.to(torch.complex64))
    return FPMForward.inverse_spectrum(spec * h)
