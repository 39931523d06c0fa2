"""Physically seeded warm start of an FPM-INR (optional; ``TrainConfig.warm_start_iterations``).

1. A few conventional quasi-Newton passes (``recon.conventional``) reconstruct the complex fields
   ``o_z`` at the ``n_z`` z-line nodes: physically refocused fields, cheap because qNewton
   converges in a few passes.
2. Both networks are fitted to those fields (supervised, no FFT): loss ``mean|A·e^{iφ} − o_z|²``
   (no phase wrapping), each step on ``z_per_step`` random nodes and a random ``stride``-strided
   pixel subgrid, Adam with cosine decay of the learning rate to 0.

The self-supervised epochs of :func:`recon.train.iter_train` follow. Measurements behind this
design are in docs/benchmarks.md ("INR quality: open problem").
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..rawdata import RawData
from .conventional import iter_conventional
from .inr import FPMINR
from .schedule import uniform_planes
from .stop import should_stop


@dataclass
class WarmStep:
    """One warm-start step: ``loss`` is NaN during the conventional passes."""

    loss: float
    lr: float
    z_um: float


def iter_warm_start(raw: RawData, net: FPMINR, z_min_um: float, z_max_um: float, *, n_z: int,
                    iterations: int, steps: int, lr: float, z_per_step: int, stride: int,
                    rng: np.random.Generator, device: torch.device, stop=None
                    ) -> Iterator[WarmStep]:
    """Yield one :class:`WarmStep` per pass/step; the generator returns False when stopped."""
    nodes = uniform_planes(z_min_um, z_max_um, n_z)
    seed_stack = None
    for ev in iter_conventional(raw, nodes, iterations=iterations, device=device, stop=stop):
        if ev.stack is not None:
            seed_stack = None if ev.stopped else ev.stack
            break
        yield WarmStep(float("nan"), lr, float("nan"))
    if seed_stack is None:
        return False
    target = torch.as_tensor(seed_stack.amplitude * np.exp(1j * seed_stack.phase),
                             dtype=torch.complex64, device=device)  # (n_z, H, W)
    z_nodes = torch.as_tensor(nodes, dtype=torch.float32, device=device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    H, W = raw.hr_shape
    per_step = min(z_per_step, n_z)
    for k in range(steps):
        if should_stop(stop):
            return False
        for g in optimizer.param_groups:  # cosine decay to 0 over the warm start
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * k / steps))
        idx = torch.as_tensor(rng.choice(n_z, per_step, replace=False), device=device)
        net.train()
        optimizer.zero_grad(set_to_none=True)
        if stride == 1:
            amplitude, phase = net.amplitude.forward_full(z_nodes[idx]), net.phase.forward_full(z_nodes[idx])
            tgt = target[idx]
        else:
            oy, ox = (int(v) for v in rng.integers(stride, size=2))
            rows = torch.arange(oy, H, stride, device=device)
            cols = torch.arange(ox, W, stride, device=device)
            amplitude, phase = net(z_nodes[idx], rows, cols)
            tgt = target[idx][:, rows][:, :, cols]
        loss = (amplitude * torch.exp(1j * phase) - tgt).abs().square().mean()
        loss.backward()
        optimizer.step()
        yield WarmStep(float(loss.detach()), optimizer.param_groups[0]["lr"], float(z_nodes[idx[0]]))
    return True
