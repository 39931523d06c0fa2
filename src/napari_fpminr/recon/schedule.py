"""z sampling and learning-rate schedule for FPM-INR training (shared/DESIGN.md §1).

Epochs are counted from 1. Odd epochs visit the ``n_z`` nodes of the z feature line (the
"uniform planes", shuffled); even epochs visit as many random continuous depths drawn
uniformly over ``[z_min_um, z_max_um]``, so that the interpolation between nodes is trained too.
The learning rate decays by ``decay`` every ``every`` epochs (step decay).
"""

from __future__ import annotations

import numpy as np


def uniform_planes(z_min_um: float, z_max_um: float, n_z: int) -> np.ndarray:
    """The ``n_z`` node depths of the z feature line (µm), ends included."""
    return np.linspace(float(z_min_um), float(z_max_um), int(n_z))


def default_z_planes(z_min_um: float, z_max_um: float, z_step_um: float = 0.25) -> np.ndarray:
    """Output sampling of a z range, ends included (±20 µm at 0.25 µm gives the paper's 161 planes)."""
    if not z_step_um > 0:
        raise ValueError(f"z step must be positive, got {z_step_um}")
    n = int(round((float(z_max_um) - float(z_min_um)) / float(z_step_um))) + 1
    return np.linspace(float(z_min_um), float(z_max_um), max(n, 1))


def epoch_depths(epoch: int, z_min_um: float, z_max_um: float, n_z: int,
                 rng: np.random.Generator, repeats: int = 1) -> np.ndarray:
    """Depths (µm) visited in ``epoch`` (1-based), one per training step, in visiting order."""
    if epoch % 2 == 1:
        z = np.tile(uniform_planes(z_min_um, z_max_um, n_z), int(repeats))
        return z[rng.permutation(len(z))]
    return rng.uniform(float(z_min_um), float(z_max_um), size=int(n_z) * int(repeats))


def step_decay_lr(epoch: int, lr: float, decay: float = 0.1, every: int = 6) -> float:
    """Learning rate in ``epoch`` (1-based): ``lr · decay ** ((epoch - 1) // every)``."""
    return float(lr) * float(decay) ** ((int(epoch) - 1) // max(1, int(every)))
