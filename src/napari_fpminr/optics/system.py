"""Optical system description of a Fourier ptychographic microscope.

Units are explicit in every name: micrometres (``_um``), numerical apertures (``na_``),
cycles per micrometre for spatial frequencies. Conventions (shared/DESIGN.md §1):

* object-side raw pixel ``dx_lr_um = pixel_um / mag``; high-resolution pixel
  ``dx_hr_um = dx_lr_um / upsample``;
* LED ``i`` illuminates with the illumination NA vector ``(na_x, na_y)``; its low-resolution
  window is centred at ``-(na_x, na_y) / wavelength_um`` in the centred hr spectrum;
* the pupil is a disk ``|k| <= na_obj / wavelength_um`` on the raw image's frequency grid,
  optionally multiplied by a complex aberration (``pupil``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class Optics:
    """Everything about the microscope that the forward model needs (not the image size).

    Attributes:
        wavelength_um: illumination wavelength in micrometres.
        na_obj: objective numerical aperture.
        mag: total magnification between sample and camera.
        pixel_um: camera pixel pitch in micrometres.
        na_illum: ``(N, 2)`` illumination NA ``(na_x, na_y)`` per LED, in acquisition order.
        upsample: integer ratio of raw to reconstructed pixel; 0 picks the smallest that fits.
        pupil: optional complex ``(h, w)`` pupil on the raw image's centred frequency grid
            (aberrations included). ``None`` means the ideal disk.
    """

    wavelength_um: float
    na_obj: float
    mag: float
    pixel_um: float
    na_illum: np.ndarray
    upsample: int = 0
    pupil: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        na = np.asarray(self.na_illum, dtype=np.float64)
        if na.ndim != 2 or na.shape[1] != 2 or na.shape[0] == 0:
            raise ValueError(f"na_illum must have shape (N, 2) with N >= 1, got {na.shape}")
        if not np.all(np.isfinite(na)):
            raise ValueError("na_illum contains NaN or infinite values")
        object.__setattr__(self, "na_illum", na)
        for name in ("wavelength_um", "na_obj", "mag", "pixel_um"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {value}")
            object.__setattr__(self, name, value)
        if self.na_obj >= 1.0:
            raise ValueError(f"na_obj must be < 1 (dry objective), got {self.na_obj}")
        up = int(self.upsample)
        if up < 0:
            raise ValueError(f"upsample must be >= 0 (0 = automatic), got {up}")
        object.__setattr__(self, "upsample", up if up > 0 else self.required_upsample())
        if self.pupil is not None:
            pupil = np.asarray(self.pupil)
            if pupil.ndim != 2 or not np.all(np.isfinite(pupil)):
                raise ValueError("pupil must be a finite 2D complex array")
            object.__setattr__(self, "pupil", pupil.astype(np.complex64))

    # ---- derived quantities -------------------------------------------------------------
    @property
    def n_leds(self) -> int:
        return int(self.na_illum.shape[0])

    @property
    def dx_lr_um(self) -> float:
        """Object-side size of one raw (low-resolution) pixel."""
        return self.pixel_um / self.mag

    @property
    def dx_hr_um(self) -> float:
        """Object-side size of one reconstructed (high-resolution) pixel."""
        return self.dx_lr_um / self.upsample

    @property
    def na_illum_abs(self) -> np.ndarray:
        """``|na_illum|`` per LED."""
        return np.hypot(self.na_illum[:, 0], self.na_illum[:, 1])

    @property
    def bright_field(self) -> np.ndarray:
        """Boolean mask of bright-field LEDs (illumination NA inside the objective NA)."""
        return self.na_illum_abs < self.na_obj

    @property
    def na_synthetic(self) -> float:
        """Synthetic NA of the reconstruction: objective NA plus the largest illumination NA."""
        return self.na_obj + float(self.na_illum_abs.max())

    def required_upsample(self) -> int:
        """Smallest integer upsampling so every LED window fits in the hr spectrum (>= 2)."""
        need = 1.0 + 2.0 * float(self.na_illum_abs.max()) * self.dx_lr_um / self.wavelength_um
        return max(2, int(math.ceil(need - 1e-9)))

    def led_order_by_na(self) -> np.ndarray:
        """LED indices sorted by illumination NA (bright field first, stable)."""
        return np.argsort(self.na_illum_abs, kind="stable")

    # ---- modifications ------------------------------------------------------------------
    def replace(self, **changes: Any) -> "Optics":
        """Copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def select_leds(self, indices: np.ndarray) -> "Optics":
        """Copy restricted to (and reordered as) ``indices``."""
        return replace(self, na_illum=self.na_illum[np.asarray(indices)])

    # ---- serialisation (JSON-safe; the pupil travels separately as a tensor) ------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "wavelength_um": self.wavelength_um,
            "na_obj": self.na_obj,
            "mag": self.mag,
            "pixel_um": self.pixel_um,
            "upsample": self.upsample,
            "na_illum": self.na_illum.tolist(),
            "has_pupil": self.pupil is not None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], pupil: np.ndarray | None = None) -> "Optics":
        return cls(
            wavelength_um=float(data["wavelength_um"]),
            na_obj=float(data["na_obj"]),
            mag=float(data["mag"]),
            pixel_um=float(data["pixel_um"]),
            na_illum=np.asarray(data["na_illum"], dtype=np.float64),
            upsample=int(data.get("upsample", 0)),
            pupil=pupil,
        )

    def summary(self) -> str:
        """One human-readable line per key quantity (used by ``fpminr info``)."""
        n_bf = int(self.bright_field.sum())
        return "\n".join(
            [
                f"wavelength     {self.wavelength_um:.4f} um",
                f"objective NA   {self.na_obj:.3f}   magnification {self.mag:g}   camera pixel {self.pixel_um:g} um",
                f"raw pixel      {self.dx_lr_um:.4f} um (object side)   upsample {self.upsample}"
                f"   hr pixel {self.dx_hr_um:.4f} um",
                f"LEDs           {self.n_leds} ({n_bf} bright-field), illumination NA up to "
                f"{self.na_illum_abs.max():.3f}, synthetic NA {self.na_synthetic:.3f}",
                f"pupil          {'calibrated complex pupil' if self.pupil is not None else 'ideal disk'}",
            ]
        )
