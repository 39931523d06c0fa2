"""The training path's forward model: fused, batched, autograd-friendly (shared/DESIGN.md §1).

:func:`recon.train.iter_train` predicts every LED's raw amplitude
``|F^-1{W_i[F{o_z}] · P · exp(i·kz·z)}|`` from the hr field ``o_z`` with one hr FFT, one gather of
all LED windows from the *uncentred* spectrum and one batched inverse FFT, without rolling any
large tensor. These functions must reproduce :meth:`FPMForward.amplitudes` exactly (tested),
including LEDs off the hr frequency grid: then the transfer is per LED
(:meth:`FPMForward.led_transfer`, ``(Z, N, h, w)``) and :func:`led_amplitudes` takes the chunk's
LED indices.
The optional spectral preconditioner of the field gradient lives here too, since it is built
from the same window indices.
"""

from __future__ import annotations

import torch

from ..optics.forward import FPMForward

__all__ = ["coverage_preconditioner", "led_amplitudes", "PreconditionGradient", "spectrum_and_transfer",
           "window_indices"]


def window_indices(fwd: FPMForward, led_chunks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Flat indices into the *uncentred* hr spectrum of every LED window, in ifftshifted order.

    Equivalent to ``ifftshift(windows(fftshift(fft2(o))))`` of :class:`FPMForward` (same
    snapped window positions) without rolling any large tensor: window element ``(a, b)`` of
    the ifftshifted window is centred element ``((a + h//2) % h, (b + w//2) % w)``, which sits at
    centred hr row ``top + that`` and uncentred hr row ``(centred - H//2) mod H``.
    """
    h, w = fwd.lr_shape
    H, W = fwd.hr_shape
    dev = fwd.window_top.device
    a = (torch.arange(h, device=dev) + h // 2) % h
    b = (torch.arange(w, device=dev) + w // 2) % w
    out = []
    for chunk in led_chunks:
        rows = (fwd.window_top[chunk][:, None] + a[None, :] - H // 2) % H  # (n, h)
        cols = (fwd.window_left[chunk][:, None] + b[None, :] - W // 2) % W  # (n, w)
        out.append((rows[:, :, None] * W + cols[:, None, :]).reshape(-1))
    return out


def coverage_preconditioner(fwd: FPMForward, window_index: list[torch.Tensor], eps: float) -> torch.Tensor:
    """Gradient filter ``c̄/(c + ε·c̄)`` on the flat uncentred hr spectrum (see ``TrainConfig.precondition``).

    ``c`` is the pupil power ``|P|²`` of every LED window added up at the hr frequencies the
    window covers (the same gather indices as the forward model, so exactly its windows).
    """
    power = torch.fft.ifftshift(fwd.pupil.abs().square(), dim=(-2, -1)).reshape(-1).to(torch.float32)
    H, W = fwd.hr_shape
    coverage = torch.zeros(H * W, dtype=torch.float32, device=power.device)
    for idx in window_index:
        coverage.index_add_(0, idx, power.repeat(idx.numel() // power.numel()))
    seen = coverage > 0
    mean = coverage[seen].mean()
    return torch.where(seen, mean / (coverage + eps * mean), torch.zeros_like(coverage))


class PreconditionGradient(torch.autograd.Function):
    """Identity forward; the backward multiplies the incoming spectrum gradient by ``weights``."""

    @staticmethod
    def forward(ctx, spectrum: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weights)
        return spectrum.view_as(spectrum)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (weights,) = ctx.saved_tensors
        return grad * weights, None


def spectrum_and_transfer(field_hr: torch.Tensor, z: torch.Tensor, fwd: FPMForward,
                           pupil: torch.Tensor | None, kz_shifted: torch.Tensor):
    """Uncentred hr spectra ``(Z, H·W)`` of ``field_hr`` and uncentred transfers.

    Transfers are ``(Z, h, w)`` when every LED is on the bin grid, else one per LED,
    ``(Z, N, h, w)`` (sub-bin tilts; ``kz_shifted`` is then unused).
    """
    spectrum = torch.fft.fft2(field_hr, norm="forward").flatten(1)
    pupil_c = pupil if pupil is not None else fwd.pupil
    if not fwd.on_grid:
        return spectrum, torch.fft.ifftshift(fwd.led_transfer(z, None, pupil_c), dim=(-2, -1))
    transfer = torch.fft.ifftshift(pupil_c, dim=(-2, -1)) * torch.polar(
        torch.ones_like(kz_shifted), kz_shifted * z[:, None, None])
    return spectrum, transfer


def led_amplitudes(spectrum: torch.Tensor, transfer: torch.Tensor, flat_idx: torch.Tensor, n_leds: int,
                    lr_shape: tuple[int, int], leds: torch.Tensor | None = None) -> torch.Tensor:
    """Predicted raw amplitudes ``(Z, n, h, w)`` of one LED chunk: the training path's forward model.

    Must equal :meth:`FPMForward.amplitudes` (tested): windows gathered from the uncentred
    spectrum in ifftshifted order, uncentred transfer, one batched inverse FFT. A per-LED
    transfer ``(Z, N, h, w)`` is narrowed to the chunk's LEDs ``leds`` (all when ``None``).
    """
    win = spectrum.index_select(1, flat_idx).reshape(spectrum.shape[0], n_leds, *lr_shape)
    if transfer.ndim == 4:
        per_led = transfer if leds is None else transfer.index_select(1, leds)
        return torch.fft.ifft2(win * per_led, norm="forward").abs()
    return torch.fft.ifft2(win * transfer[:, None], norm="forward").abs()
