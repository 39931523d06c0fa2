"""A simulated stained slide imaged in red, green and blue: the colour pipeline's test sample.

Two stains with different absorption spectra (Beer–Lambert, optical densities per channel after
Ruifrok & Johnston's H&E vectors): a haematoxylin-like stain in small nuclei and an eosin-like
stain in the cytoplasm of larger cells. The intensity transmittance of channel ``c`` is
``T_c = 10^-(OD_H,c·H + OD_E,c·E)``, its amplitude ``sqrt(T_c)``, and a weak phase
``phase_rad·(λ_G/λ_c)·(H + E)`` follows the stain thickness.

Chromatic aberration of the microscope is simulated as the two effects a colour acquisition
shows: a focal shift per channel (the thin sample lies at ``z0 + focal_shift_um[c]`` for channel
``c``, i.e. is in focus there) and a lateral shift of whole channels (``shift_raw_px[c]``, raw px,
``(dy, dx)``, ``moving(x) = sample(x - shift)``). The truth is the band-limited (synthetic NA)
transmittance of the unshifted sample per channel, at the common focus.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..optics.forward import FPMForward
from ..optics.samples import band_limit, cell_layer
from ..optics.system import Optics
from ..rawdata import RawData
from ..simulate import multislice_intensities, paper_optics
from .register import fourier_shift

__all__ = ["StainedSlide", "simulate_stained"]

WAVELENGTHS_UM = (0.630, 0.532, 0.475)  # red, green, blue
# optical density per unit stain in R, G, B (Ruifrok & Johnston 2001, H&E)
OD_HAEMATOXYLIN = (0.65, 0.70, 0.29)
OD_EOSIN = (0.07, 0.99, 0.11)


@dataclass(frozen=True, eq=False)
class StainedSlide:
    """Three raw data sets (R, G, B) and their truth.

    ``truth`` is complex ``(3, H, W)``: each channel's band-limited sample on the common hr grid,
    unshifted, the field in focus at ``z_um``; ``focus_um[c] = z_um + focal_shift_um[c]``.
    """

    raws: tuple[RawData, RawData, RawData]
    truth: np.ndarray
    z_um: float
    focus_um: tuple[float, float, float]
    shift_raw_px: tuple[tuple[float, float], ...]

    @property
    def transmittance(self) -> np.ndarray:
        """``(3, H, W)`` band-limited intensity transmittance (white = 1)."""
        return (np.abs(self.truth) ** 2).astype(np.float32)


def stain_maps(shape, dx_um: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Haematoxylin and eosin amounts ``(H, W)`` in [0, 1]: nuclei inside larger cytoplasm cells."""
    cells = 1.0 - np.abs(cell_layer(shape, dx_um, rng, cells_per_100um2=0.9, radius_um=(2.5, 4.0),
                                    granules_per_100um2=0.0, amp_min=0.0, phase_max_rad=0.0, min_cells=3))
    nuclei = 1.0 - np.abs(cell_layer(shape, dx_um, rng, cells_per_100um2=1.2, radius_um=(0.8, 1.6),
                                     granules_per_100um2=2.0, amp_min=0.0, phase_max_rad=0.0, min_cells=3))
    return np.clip(nuclei, 0, 1), np.clip(cells, 0, 1)


def simulate_stained(size: int = 48, seed: int = 0, *, z_um: float = 0.0,
                     focal_shift_um: tuple[float, float, float] = (3.0, 0.0, -3.0),
                     shift_raw_px: tuple[tuple[float, float], ...] = ((0.0, 0.4), (0.0, 0.0), (0.0, 0.0)),
                     od_scale: float = 0.6, phase_rad: float = 0.3, photons: float | None = None,
                     optics: Optics | None = None, device: str | torch.device = "cpu") -> StainedSlide:
    """Simulate the stained slide (module docstring) with ``optics`` (default: the paper's, per λ)."""
    base = paper_optics() if optics is None else optics
    per_channel = [base.replace(wavelength_um=lam) for lam in WAVELENGTHS_UM]
    upsample = max(o.replace(upsample=0).upsample for o in per_channel)
    per_channel = [o.replace(upsample=upsample) for o in per_channel]
    H = W = size * upsample
    dx = per_channel[0].dx_hr_um
    rng = np.random.default_rng([int(seed), 20])
    haem, eosin = stain_maps((H, W), dx, rng)
    noise_rng = np.random.default_rng([int(seed), 21])
    raws, truth = [], []
    for c, opt in enumerate(per_channel):
        od = od_scale * (OD_HAEMATOXYLIN[c] * haem + OD_EOSIN[c] * eosin)
        phase = phase_rad * (WAVELENGTHS_UM[1] / WAVELENGTHS_UM[c]) * (haem + eosin)
        sample = np.sqrt(10.0 ** (-od)) * np.exp(1j * phase)
        truth.append(band_limit(sample, dx, opt.na_synthetic / opt.wavelength_um))
        dy, dx_px = (v * upsample for v in shift_raw_px[c])
        moved = fourier_shift(torch.as_tensor(sample.astype(np.complex64)), dy, dx_px)
        fwd = FPMForward(opt, (size, size), torch.device(device))
        with torch.no_grad():
            intensity = multislice_intensities(moved[None], [z_um + focal_shift_um[c]], fwd).cpu().numpy()
        if photons is not None:
            intensity = noise_rng.poisson(np.clip(intensity, 0, None) * photons) / photons
        meta = {"format": "simulated", "preset": "stained", "simulated": True, "seed": int(seed),
                "channel": "RGB"[c], "focus_um": z_um + focal_shift_um[c], "shift_raw_px": list(shift_raw_px[c])}
        raws.append(RawData(intensities=intensity.astype(np.float32), optics=opt, source=None, z_um=None, meta=meta))
    return StainedSlide(raws=tuple(raws), truth=np.stack(truth).astype(np.complex64), z_um=float(z_um),
                        focus_um=tuple(float(z_um + s) for s in focal_shift_um),
                        shift_raw_px=tuple(tuple(float(v) for v in s) for s in shift_raw_px))
