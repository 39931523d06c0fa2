"""A mosaic of low-rank tile models of a KNOWN refocusing field, without training (tests, benchmarks).

Each tile's model is the closed-form truncated SVD (:meth:`LowRankField.from_stack`) of the
sample's window propagated to ``n_planes`` depths over ``[z_min_um, z_max_um]`` by the angular
spectrum (``exp(i·kz·z)``, DESIGN.md §1), band-limited to the synthetic aperture: what a trained
tiled run writes, with a field that is known everywhere. Building a 361-tile 4096² hr mosaic
takes seconds, so browsing can be measured on a whole slide.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..io.model_file import save_model
from ..io.mosaic_file import save_mosaic
from ..recon.lowrank import LowRankArchitecture, LowRankField
from ..recon.model import Model
from ..tile_layout import TileLayout

__all__ = ["synthetic_mosaic"]


def _stack(window: np.ndarray, optics, z_um: np.ndarray) -> torch.Tensor:
    """Complex ``(Z, h, w)``: ``window`` refocused to ``z_um`` (angular spectrum, periodic)."""
    h, w = window.shape
    dx = optics.dx_hr_um
    fy = np.fft.fftfreq(h, dx)[:, None]
    fx = np.fft.fftfreq(w, dx)[None, :]
    k2 = fx ** 2 + fy ** 2
    kz = 2 * math.pi * np.sqrt(np.maximum(1.0 / optics.wavelength_um ** 2 - k2, 0.0))
    spec = np.fft.fft2(window)
    return torch.as_tensor(np.fft.ifft2(spec[None] * np.exp(1j * kz[None] * z_um[:, None, None])).astype(np.complex64))


def synthetic_mosaic(out, field: np.ndarray, optics, tile: int, overlap: int, z_range_um=(-2.0, 2.0),
                     n_planes: int = 5, rank: int = 4, n_z: int = 9, focus_um=None) -> Path:
    """Write ``out`` (a mosaic ``.fpminr``) whose tiles model ``field`` (complex, hr grid of ``optics``).

    ``focus_um(row, col)``: the depth at which tile ``(row, col)`` holds the sample in focus (its
    ``best_focus_um``; default the middle of the z range): its stack is ``field`` refocused to
    ``z - focus``.
    """
    out = Path(out)
    up = optics.upsample
    H, W = field.shape
    layout = TileLayout((H // up, W // up), tile, overlap, up, optics.dx_lr_um)
    work = out.with_name(out.name + ".synthetic-tiles")
    work.mkdir(parents=True, exist_ok=True)
    z = np.linspace(float(z_range_um[0]), float(z_range_um[1]), int(n_planes))
    markers, cache = [], {}
    for t in layout.tiles():
        t0, l0, th, tw = layout.hr_window(t)
        window = field[t0:t0 + th, l0:l0 + tw]
        focus = float(np.mean(z)) if focus_um is None else float(focus_um(t.row, t.col))
        key = window.tobytes()[:4096] + bytes(str((th, tw, float(np.abs(window).sum()), focus)), "ascii")
        name = cache.get(key)
        if name is None:  # periodic samples repeat windows: one model file per distinct window
            arch = LowRankArchitecture.for_optics(optics, (t.height, t.width), z[0], z[-1], n_z, rank)
            net = LowRankField.from_stack(arch, _stack(window, optics, z - focus), z).round_to_storage_()
            name = f"{t.name}.fpminr"
            save_model(Model(net, optics, (t.height, t.width), {"synthetic": True}), work / name)
            cache[key] = name
        markers.append({"row": t.row, "col": t.col, "window": list(t.window), "amplitude_scale": 1.0,
                        "best_focus_um": focus, "na_illum_mean": 0.0, "file": name})
    return save_mosaic(out, layout, markers, work, optics, (float(z[0]), float(z[-1])), meta={"synthetic": True})
