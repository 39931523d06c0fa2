"""Batched FPM forward model (shared/DESIGN.md §1).

For LED ``i`` and defocus ``z`` (µm) the predicted raw intensity is

    I_i = | F^-1{ W_i[ F{o_z} ] · P · exp(i · kz · z) } |^2

* ``F`` is the centred 2D DFT with ``norm="forward"`` on the hr grid and ``F^-1`` the centred
  inverse DFT with ``norm="forward"`` on the raw grid, so a transparent sample (``o = 1``)
  gives ``I = 1`` under every bright-field LED: amplitudes are reported relative to the
  bright-field background.
* ``W_i`` crops the raw-sized window of the hr spectrum centred at ``-(na_x, na_y)/λ``.
  Window centres are **snapped to the nearest hr frequency bin** (as the FPM-INR reference
  does); the snapping error is at most half a bin, ``1/(2·w·dx_lr)`` cycles/µm.
* ``P`` is the pupil: the disk ``|k| <= na_obj/λ`` times an optional complex aberration.
* ``kz = 2π·sqrt(1/λ² - |k|²)`` rad/µm inside the pupil, 0 outside; with this sign a thin
  sample at depth ``z0`` is in focus in the reconstruction at ``z = z0``.

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
    """

    def __init__(self, optics: Optics, lr_shape: tuple[int, int], device: torch.device | str = "cpu"):
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
        transfer = self.transfer(z_um, pupil)  # (Z, h, w)
        win = self.windows(spec, leds)  # (Zf, N, h, w)
        return self.inverse_spectrum(win * transfer[:, None])

    def intensities(self, field_hr: torch.Tensor, z_um, leds=None, pupil=None) -> torch.Tensor:
        """Predicted raw intensities ``(Z, N, h, w)``."""
        f = self.lowres_fields(field_hr, z_um, leds, pupil)
        return f.real.square() + f.imag.square()

    def amplitudes(self, field_hr: torch.Tensor, z_um, leds=None, pupil=None) -> torch.Tensor:
        """Predicted raw amplitudes ``sqrt(I)``, shape ``(Z, N, h, w)`` (differentiable at 0)."""
        return self.lowres_fields(field_hr, z_um, leds, pupil).abs()


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
