"""Exact re-factorisation of a low-rank field's node matrix and the rank a tolerance keeps
(:meth:`.lowrank.LowRankField.compaction` / :meth:`~.lowrank.LowRankField.compacted`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["CODE_SHARE_DB", "COMPACTION_TOLERANCE_DB", "Compaction", "db", "worst_row"]

# LowRankField.compacted: the largest change of any decoded plane, relative to its field energy. At
# -60 dB a plane's RMS amplitude changes by <= 0.1 % and its transmittance |o|^2 by <= 0.2 % (under a
# quarter of an 8-bit sRGB step near white), 4+ dB below the most accurate simulated reconstruction's
# own error (INR 47-56 dB PSNR); -50 dB was measured to cost 0.3 dB PSNR on the simulated slide's blue
# channel (docs/benchmarks.md, colour section).
COMPACTION_TOLERANCE_DB = -60.0
# The 16-bit codes' own share of a compaction's tolerance: they may change no decoded plane by more than
# tolerance_db + CODE_SHARE_DB (-70 dB at the default). Measured on the simulated slide over +-20 um: codes
# changing a plane by -65 dB of its energy cost its blue channel 0.1 dB PSNR (50.97 dB: the change is then
# only 15 dB below the reconstruction's own error); a change 20 dB below it costs < 0.05 dB.
CODE_SHARE_DB = -10.0


def worst_row(delta: torch.Tensor) -> float:
    """Largest row norm of a node-matrix difference: the largest change of any decoded plane, at any depth."""
    return float(delta.abs().square().sum(1).max().sqrt())


def db(value: float, ref: float) -> float | None:
    """``20·log10(value/ref)`` rounded to 0.01 dB; None for an exact zero."""
    return round(float(20 * np.log10(value / ref)), 2) if value > 0 else None


@dataclass(frozen=True)
class Compaction:
    """The exact re-factorisation ``N = line_basis · diag(singular_values) · vh`` of a field's node
    matrix (:meth:`LowRankField.compaction`) and the rank its tolerance keeps."""

    line_basis: torch.Tensor  # (n_z, m) orthonormal columns
    singular_values: torch.Tensor  # (m,) descending
    vh: torch.Tensor  # (m, K) orthonormal rows
    rank: int
    min_plane_norm: float  # smallest field norm over every decodable depth
    tail: float  # σ_{rank+1}: the bound on any plane's change (field norm)
    tolerance_db: float

    def terms(self, r: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``r`` terms as a z line (n_z, r) and coefficients (r, K), complex128, scaled as
        :meth:`LowRankField.from_stack` does (``u_0(z) ≈ 1``), each term's z line real and positive on
        average (its phase moved into the coefficients)."""
        n_z = self.line_basis.shape[0]
        line = self.line_basis[:, :r] * math.sqrt(n_z)
        coef = self.singular_values[:r, None] * self.vh[:r] / math.sqrt(n_z)
        mean = line.mean(0)
        ph = torch.where(mean.abs() > 0, mean / mean.abs().clamp_min(1e-300), torch.ones_like(mean))
        return line / ph[None, :], coef * ph[:, None]

    def report(self) -> dict:
        """JSON-safe summary: kept rank, numerical rank, the bound in dB, the singular values in dB."""
        ref = max(self.min_plane_norm, 1e-300)
        s = self.singular_values.numpy()
        return {"rank": int(self.rank), "terms": int(s.size), "tolerance_db": self.tolerance_db,
                "bound_db": float(20 * np.log10(max(self.tail, 1e-300) / ref)) if self.tail > 0 else None,
                "singular_values_db": [round(float(20 * np.log10(max(v, 1e-300) / ref)), 2) for v in s]}
