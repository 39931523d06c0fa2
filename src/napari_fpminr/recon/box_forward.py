"""The polish's forward model, pruned to the pupil's bounding box (shared/DESIGN.md §1).

Every LED's low-resolution field is ``ψ_i = F^-1{W_i[Ô] · P · exp(i·kz·z)}``. The pupil ``P`` is
zero outside a disk of radius ``NA_obj/λ``, which covers ~11 % of the raw spectrum with the
paper's optics, so only the ``b_y × b_x`` box around it carries anything. This module gathers
just that box of each LED window from the hr spectrum (in centred order, frequencies
``-r..r``), multiplies it by the boxed transfer function, and inverse-transforms it zero-padded
to the raw size. Placing the box at the start of the padded array instead of around frequency 0
shifts the spectrum by a constant, which multiplies ``ψ_i`` by a phase ramp and leaves
``|ψ_i|`` — all the loss sees — unchanged. The gather, the transfer product and their backward
scatter then touch ~9× fewer elements than the full windows of
:func:`recon.train_forward.led_amplitudes`, whose amplitudes this reproduces (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..optics.forward import FPMForward

__all__ = ["PupilBox"]


@dataclass
class PupilBox:
    """Pupil bounding box on the centred raw frequency grid, and the gather indices per LED chunk.

    Attributes:
        rows, cols: centred raw-spectrum rows/columns of the box (contiguous ranges).
        lr_shape: raw image size (the inverse FFT's padded size).
    """

    rows: torch.Tensor
    cols: torch.Tensor
    lr_shape: tuple[int, int]

    @classmethod
    def of(cls, fwd: FPMForward) -> "PupilBox":
        """The smallest box that holds every nonzero of ``fwd.support`` (the pupil disk), one bin
        wider on each side when LEDs tilt off the frequency grid (their shifted disks reach up to
        one bin further; see :mod:`optics.forward`)."""
        support = fwd.support.to(torch.bool)
        pad = 0 if getattr(fwd, "on_grid", True) else 1
        h, w = fwd.lr_shape
        rows = torch.nonzero(support.any(dim=1)).reshape(-1)
        cols = torch.nonzero(support.any(dim=0)).reshape(-1)
        rows = torch.arange(max(0, int(rows.min()) - pad), min(h, int(rows.max()) + 1 + pad), device=support.device)
        cols = torch.arange(max(0, int(cols.min()) - pad), min(w, int(cols.max()) + 1 + pad), device=support.device)
        return cls(rows, cols, fwd.lr_shape)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.rows.numel()), int(self.cols.numel()))

    def gather_indices(self, fwd: FPMForward, leds: torch.Tensor) -> torch.Tensor:
        """Flat indices into the *uncentred* hr spectrum of the box of each LED window ``(n·b_y·b_x,)``.

        Centred window element ``(a, b)`` sits at centred hr ``(top + a, left + b)``, i.e. at
        uncentred hr ``((top + a - H//2) mod H, (left + b - W//2) mod W)``.
        """
        H, W = fwd.hr_shape
        r = (fwd.window_top[leds][:, None] + self.rows[None, :] - H // 2) % H  # (n, b_y)
        c = (fwd.window_left[leds][:, None] + self.cols[None, :] - W // 2) % W  # (n, b_x)
        return (r[:, :, None] * W + c[:, None, :]).reshape(-1)

    def crop(self, centred: torch.Tensor) -> torch.Tensor:
        """The box of a centred raw-grid array ``(..., h, w)`` (e.g. the transfer function)."""
        return centred[..., self.rows[:, None], self.cols[None, :]]

    def amplitudes(self, spectrum: torch.Tensor, transfer_box: torch.Tensor, flat_idx: torch.Tensor,
                   n_leds: int) -> torch.Tensor:
        """Raw amplitudes ``(Z, n, h, w)`` from uncentred hr spectra ``(Z, H·W)`` ("forward" norm).

        ``transfer_box``: the boxed transfer ``(Z, b_y, b_x)`` (or per LED ``(Z, n, b_y, b_x)``).
        """
        by, bx = self.shape
        win = spectrum.index_select(1, flat_idx).reshape(spectrum.shape[0], n_leds, by, bx)
        t = transfer_box if transfer_box.ndim == 4 else transfer_box[:, None]
        return torch.fft.ifft2(win * t, s=self.lr_shape, norm="forward").abs()
