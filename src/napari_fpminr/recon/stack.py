"""``Stack``: a discrete z-stack of reconstructed complex fields on the hr grid.

Plane ``k`` holds the sample function ``o_z`` "seen at depth" ``z_um[k]`` (shared/DESIGN.md §1):
amplitude (≈ 1 for a transparent sample) and phase (rad), sampled at the hr pixel
``optics.dx_hr_um``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..optics.system import Optics

__all__ = ["Stack"]


@dataclass(frozen=True, eq=False)
class Stack:
    """Reconstructed z-stack.

    Attributes:
        amplitude: ``(Z, H, W)`` float32.
        phase: ``(Z, H, W)`` float32, radians.
        z_um: ``(Z,)`` float64 depths (µm).
        optics: the system of the raw data (gives the hr pixel size).
        meta: JSON-safe provenance (method, iterations, timings, ...).
        pupil: optional recovered complex pupil per plane ``(Z, h, w)`` (pupil-update runs only).
        led_gain: optional fitted amplitude gain per plane and LED ``(Z, N)`` (raw LED order;
            intensity-correction runs only, :mod:`recon.qnewton`).
    """

    amplitude: np.ndarray
    phase: np.ndarray
    z_um: np.ndarray
    optics: Optics
    meta: dict[str, Any] = field(default_factory=dict)
    pupil: np.ndarray | None = field(default=None, repr=False)
    led_gain: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        amp = np.ascontiguousarray(self.amplitude, dtype=np.float32)
        phase = np.ascontiguousarray(self.phase, dtype=np.float32)
        z = np.asarray(self.z_um, dtype=np.float64).reshape(-1)
        if amp.ndim != 3 or phase.shape != amp.shape:
            raise ValueError(f"amplitude and phase must both be (Z, H, W), got {amp.shape} and {phase.shape}")
        if z.size != amp.shape[0]:
            raise ValueError(f"{z.size} depths for {amp.shape[0]} planes")
        object.__setattr__(self, "amplitude", amp)
        object.__setattr__(self, "phase", phase)
        object.__setattr__(self, "z_um", z)

    @property
    def n_planes(self) -> int:
        return int(self.amplitude.shape[0])

    @property
    def hr_shape(self) -> tuple[int, int]:
        return (int(self.amplitude.shape[1]), int(self.amplitude.shape[2]))

    @property
    def dx_hr_um(self) -> float:
        """hr pixel size (µm)."""
        return self.optics.dx_hr_um

    def index_of(self, z_um: float) -> int:
        """Index of the plane nearest to ``z_um`` (first one on ties)."""
        return int(np.argmin(np.abs(self.z_um - float(z_um))))

    def at(self, z_um: float) -> tuple[np.ndarray, np.ndarray]:
        """``(amplitude, phase)`` ``(H, W)`` of the plane nearest to ``z_um``."""
        k = self.index_of(z_um)
        return self.amplitude[k], self.phase[k]

    def complex_field(self) -> np.ndarray:
        """``(Z, H, W)`` complex64 field ``amplitude · exp(i·phase)``."""
        return (self.amplitude * np.exp(1j * self.phase)).astype(np.complex64)
