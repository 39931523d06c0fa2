"""Physics core: optical system, batched forward model, propagation, simulation."""

from .forward import FPMForward, angular_spectrum, frequency_grid, kz_map, pupil_support
from .system import Optics

__all__ = ["FPMForward", "Optics", "angular_spectrum", "frequency_grid", "kz_map", "pupil_support"]
