"""Tiles of a mosaic prepared for the pyramid (:mod:`.pyramid`): coefficients, z line, weights, grids.

* :class:`PreparedTile`: one tile's low-rank coefficients in complex form (scaled for an unnormalised
  inverse DFT), its signed frequency bins, its z line (numpy, interpolated as the model does), its
  blending weight's two factors, and, filled by the pyramid, the folded coefficients or component
  fields per decode grid and the weights averaged per block; tiles of the MLP kind keep their model.
* :func:`axis_geometry`: the decode grid of one tile axis at a level (step, first global block,
  sub-pixel offset, sample count, level origin, padding).
* :func:`block_means`: a weight factor averaged over the decode grid's blocks.
* :class:`ByteLRU`: a byte-budgeted LRU (the caller locks).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch

from ..recon.lowrank import LowRankField

__all__ = ["ByteLRU", "PreparedTile", "axis_geometry", "block_means"]


class ByteLRU:
    """Byte-budgeted LRU (not locked: the pyramid holds its lock around every use)."""

    def __init__(self, budget: int):
        self.budget = int(budget)
        self.items: OrderedDict = OrderedDict()
        self.bytes = 0

    def get(self, key):
        item = self.items.get(key)
        if item is not None:
            self.items.move_to_end(key)
        return item

    def put(self, key, value, nbytes: int) -> None:
        if key in self.items:
            self.bytes -= self.items.pop(key)[1]
        self.items[key] = (value, int(nbytes))
        self.bytes += int(nbytes)
        while self.bytes > self.budget and len(self.items) > 1:
            _, (_, n) = self.items.popitem(last=False)
            self.bytes -= n


class PreparedTile:
    """A tile prepared for decoding: complex coefficients, signed bins, z line, weights."""

    def __init__(self, mosaic, tile):
        self.tile = tile
        self.key = (tile.row, tile.col)
        lay = mosaic.layout
        self.t0, self.l0, self.th, self.tw = lay.hr_window(tile)
        self.scale = float(mosaic.tiles[self.key]["amplitude_scale"])
        wr, wc = lay.axis_weights(tile)
        self.w_row, self.w_col = wr.astype(np.float64), wc.astype(np.float64)
        model = mosaic.tile_model(tile.row, tile.col)
        self.model = None
        net = model.net
        if isinstance(net, LowRankField) and tuple(net.arch.hr_shape) == (self.th, self.tw):
            with torch.no_grad():  # (R, K), scaled for an unnormalised inverse DFT (ortho: 1/sqrt(h·w))
                self.coef = (torch.complex(net.coefficients[0], net.coefficients[1]).detach().cpu()
                             / math.sqrt(self.th * self.tw)).numpy().astype(np.complex64)
                line = torch.complex(net.z_line[0], net.z_line[1]).detach().cpu()  # (n_z, R)
            self.line = line.numpy().astype(np.complex64)
            idx = net.index.cpu().numpy()
            my, mx = idx // self.tw, idx % self.tw
            self.my = np.where(my >= self.th - self.th // 2, my - self.th, my).astype(np.int32)  # signed bins
            self.mx = np.where(mx >= self.tw - self.tw // 2, mx - self.tw, mx).astype(np.int32)
            self.z_range = (float(net.arch.z_min_um), float(net.arch.z_max_um), int(net.arch.n_z))
        else:
            self.model = model  # decoded through the model, at full resolution
        self.folded: dict = {}  # (d_y, d_x, phase_y, phase_x) -> (fields or coefficients, flat bins or None, z line)
        self.weights: dict = {}  # (s, k) -> (w_row per block, w_col per block)
        self.nodes: dict = {}  # level step s -> (node depths (N,), amplitude images (N, h, w)) or None

    def nbytes(self) -> int:
        n = 0 if self.model is not None else self.coef.nbytes + self.my.nbytes * 2
        shared = self.coef.__array_interface__["data"][0] if self.model is None else None
        return n + sum((c.numel() * 8 if c.data_ptr() != shared else 0) + (f.numel() * 8 if f is not None else 0)
                       for c, f, _ in self.folded.values()) + 65536 \
            + sum(v[1].nbytes for v in self.nodes.values() if v is not None)

    def u(self, z_um: float, line: np.ndarray | None = None) -> np.ndarray:
        """Complex z weights ``(R,)`` at ``z_um`` (the model's own linear interpolation, clamped) of the
        tile's z line or of ``line`` (the same nodes, other terms)."""
        line = self.line if line is None else line
        z_min, z_max, n_z = self.z_range
        t = min(max((z_um - z_min) / (z_max - z_min) * (n_z - 1), 0.0), n_z - 1.0)
        i0 = min(int(math.floor(t)), n_z - 2)
        f = t - i0
        return (line[i0] * (1 - f) + line[i0 + 1] * f).astype(np.complex64)


def axis_geometry(t0: int, size: int, s: int, k: int):
    """Decode grid of one tile axis: step ``d``, first global block ``g0``, offset, count, level start, pad."""
    d = s // k
    while d > 1 and size % d:
        d //= 2  # the fold needs a whole number of samples per tile
    k = s // d
    g0 = math.ceil((t0 - (d - 1) / 2.0) / d)
    phase = g0 * d + (d - 1) / 2.0 - t0  # position of the first sample in the tile, in [0, d)
    lv0 = g0 // k
    return d, k, g0, phase, size // d, lv0, g0 - lv0 * k


def block_means(w: np.ndarray, start: int, d: int, n: int) -> np.ndarray:
    """Means of ``w`` (zero outside) over the ``n`` blocks ``[start + i·d, start + (i+1)·d)``."""
    lo = min(start, 0)
    padded = np.zeros(max(w.size, start + n * d) - lo)
    padded[-lo:-lo + w.size] = w
    seg = padded[start - lo:start - lo + n * d]
    return seg.reshape(n, d).mean(axis=1)
