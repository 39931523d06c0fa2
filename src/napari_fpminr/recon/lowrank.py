"""Band-limited low-rank representation of a refocusing z-stack (the default FPM-INR field).

The complex hr field "seen at depth z" (shared/DESIGN.md §1) is written as a sum of ``R``
separable terms, a spatial factor times a z factor, the FPM-INR factorisation ``M(x, y) ⊙ u(z)``
with the MLP decoder replaced by the identity (exact and linear):

    o_z(x, y) = Σ_c u_c(z) · S_c(x, y),        S_c = F^-1{ Ŝ_c }

* ``Ŝ_c`` is the spectrum of the spatial factor, kept only on the hr frequencies inside the
  **synthetic aperture** ``|k| <= (NA_obj + NA_ill,max)/λ`` (plus a margin of
  :data:`APERTURE_MARGIN_BINS` bins for the snapping of the LED windows): no measurement sees
  anything beyond it, so nothing is lost, and it is ~8 % of the hr spectrum at 2× upsampling.
  Coefficients use the unitary DFT (``norm="ortho"``), so one unit of a coefficient is one unit
  of field energy, the same scale as a pixel value.
* ``u_c(z)`` is a complex z line of ``n_z`` nodes uniformly spaced over ``[z_min_um, z_max_um]``,
  linearly interpolated for any continuous ``z`` (clamped outside the range).

Why this shape: a refocused FPM stack is very low-rank in z (a truncated SVD of a 41-plane
stack keeps 99.5 % of its energy at rank 1 and reproduces it at rank 8), so the factors can be
initialised in closed form from a conventional seed stack (:func:`from_stack`), and a slice at
any z decodes as one hr inverse FFT of ``Σ_c u_c(z)·Ŝ_c``. The uncentred forward-normalised
spectrum that the forward model needs is ``Σ_c u_c(z)·Ŝ_c / sqrt(H·W)`` on those bins, so
training never computes an hr FFT at all.

Storage (:meth:`LowRankField.storage_tensors`): each term's coefficients relative to the term's
peak ``s_c = max_k |Ŝ_c[k]|``, either as float16 real and imaginary parts (32 bits per complex
coefficient) or, for the weakest ``coarse_terms`` terms of a compacted field, in the 16-bit
log-polar code :data:`LOGPOLAR_ENCODING` (8-bit log-magnitude over :data:`LOGPOLAR_RANGE_DB` below
the peak, 8-bit phase). :meth:`LowRankField.compacted` gives a term the coarse code only while the
exact worst change of any decoded plane stays within the compaction's tolerance (transform coding:
bits where the energy is).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .compaction import CODE_SHARE_DB, COMPACTION_TOLERANCE_DB, Compaction, db, worst_row
from .term_codes import (LOGPOLAR_ENCODING, LOGPOLAR_RANGE_DB, decode_logpolar, encode_logpolar,
                         snap_scale)

__all__ = ["APERTURE_MARGIN_BINS", "CODE_SHARE_DB", "COEFFICIENT_STORAGE_DTYPE", "COMPACTION_TOLERANCE_DB", "Compaction",
           "LOGPOLAR_ENCODING", "LOGPOLAR_RANGE_DB", "LowRankArchitecture", "LowRankField", "aperture_index",
           "decode_logpolar", "encode_logpolar"]

APERTURE_MARGIN_BINS = 1.5  # LED windows are snapped to the nearest hr bin: up to 0.5 bin per axis
COEFFICIENT_STORAGE_DTYPE = torch.float16  # coefficients are stored per component relative to its peak
MAX_HR_PIXELS = 1 << 30  # 32768² hr: beyond any single field this program reconstructs


def aperture_index(hr_shape: tuple[int, int], dx_hr_um: float, radius_cycles_per_um: float) -> np.ndarray:
    """Flat indices (row-major, *uncentred* DFT order) of the hr bins with ``|k| <= radius``.

    Bin ``(m, n)`` has frequency ``(m'/(H·dx), n'/(W·dx))`` with ``m'`` the signed index
    (``m' = m`` for ``m < H - H//2``, else ``m - H``). Computed in float64 from the integers,
    so the same architecture always yields the same bins (file and memory agree).
    """
    H, W = int(hr_shape[0]), int(hr_shape[1])
    fy = np.fft.fftfreq(H, d=float(dx_hr_um))
    fx = np.fft.fftfreq(W, d=float(dx_hr_um))
    r2 = float(radius_cycles_per_um) ** 2
    rows = np.flatnonzero(fy * fy <= r2)
    cols = np.flatnonzero(fx * fx <= r2)  # the disk's bounding box: no H×W temporary
    inside = fy[rows, None] ** 2 + fx[None, cols] ** 2 <= r2
    r, c = np.nonzero(inside)
    return (rows[r] * W + cols[c]).astype(np.int64)


def expected_aperture_bins(hr_shape: tuple[int, int], dx_hr_um: float, radius_cycles_per_um: float) -> float:
    """Area estimate of the number of bins :func:`aperture_index` returns (no allocation)."""
    H, W = hr_shape
    df_y, df_x = 1.0 / (H * dx_hr_um), 1.0 / (W * dx_hr_um)
    r = radius_cycles_per_um
    disk = math.pi * r * r / (df_y * df_x)
    return min(float(H) * float(W), disk)


@dataclass(frozen=True)
class LowRankArchitecture:
    """Shape of a :class:`LowRankField` (stored in model files).

    Attributes:
        hr_shape: ``(H, W)`` hr grid (pixels).
        z_min_um, z_max_um: z range of the z line (µm).
        n_z: nodes of the z line (≥ 2).
        rank: number of separable terms ``R``.
        dx_hr_um: hr pixel (µm).
        aperture_cycles_per_um: radius of the kept disk of frequencies (cycles/µm).
        coarse_terms: how many of the last terms are stored in the 16-bit log-polar code
            (:data:`LOGPOLAR_ENCODING`) instead of float16 real/imag; the first term never is
            (``0 <= coarse_terms < rank``). Set by :meth:`LowRankField.compacted`.
    """

    hr_shape: tuple[int, int]
    z_min_um: float
    z_max_um: float
    n_z: int
    rank: int
    dx_hr_um: float
    aperture_cycles_per_um: float
    coarse_terms: int = 0

    kind = "lowrank"

    def __post_init__(self) -> None:
        object.__setattr__(self, "hr_shape", (int(self.hr_shape[0]), int(self.hr_shape[1])))
        H, W = self.hr_shape
        if min(H, W) < 2 or H * W > MAX_HR_PIXELS:
            raise ValueError(f"hr_shape must be between 2x2 and {MAX_HR_PIXELS} pixels, got {self.hr_shape}")
        if not (math.isfinite(self.z_min_um) and math.isfinite(self.z_max_um) and self.z_max_um > self.z_min_um):
            raise ValueError(f"z range must be finite and increasing, got [{self.z_min_um}, {self.z_max_um}] um")
        if not (2 <= int(self.n_z) <= 100_000 and 1 <= int(self.rank) <= 1024):
            raise ValueError(f"n_z must be 2..100000 and rank 1..1024, got {self.n_z}, {self.rank}")
        if not (self.dx_hr_um > 0 and math.isfinite(self.dx_hr_um)
                and self.aperture_cycles_per_um > 0 and math.isfinite(self.aperture_cycles_per_um)):
            raise ValueError("dx_hr_um and aperture_cycles_per_um must be positive and finite")
        object.__setattr__(self, "n_z", int(self.n_z))
        object.__setattr__(self, "rank", int(self.rank))
        if not 0 <= int(self.coarse_terms) < self.rank:
            raise ValueError(f"coarse_terms must be 0..rank-1 ({self.rank - 1}), got {self.coarse_terms}")
        object.__setattr__(self, "coarse_terms", int(self.coarse_terms))

    @property
    def term_encodings(self) -> tuple[str, ...]:
        """Each term's storage code, strongest first: "float16" or :data:`LOGPOLAR_ENCODING`."""
        return ("float16",) * (self.rank - self.coarse_terms) + (LOGPOLAR_ENCODING,) * self.coarse_terms

    @classmethod
    def for_optics(cls, optics, lr_shape: tuple[int, int], z_min_um: float, z_max_um: float, n_z: int,
                   rank: int) -> "LowRankArchitecture":
        """The architecture covering the synthetic aperture of ``optics`` for raw images of ``lr_shape``."""
        hr = (int(lr_shape[0]) * optics.upsample, int(lr_shape[1]) * optics.upsample)
        dx = optics.dx_hr_um
        bin_size = 1.0 / (min(hr) * dx)
        radius = optics.na_synthetic / optics.wavelength_um + APERTURE_MARGIN_BINS * bin_size
        return cls(hr, float(z_min_um), float(z_max_um), int(n_z), int(rank), float(dx), float(radius))

    @property
    def n_coefficients(self) -> int:
        return int(aperture_index(self.hr_shape, self.dx_hr_um, self.aperture_cycles_per_um).size)

    def node_depths(self) -> np.ndarray:
        return np.linspace(self.z_min_um, self.z_max_um, self.n_z)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hr_shape"] = list(self.hr_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LowRankArchitecture":
        return cls(hr_shape=tuple(int(v) for v in d["hr_shape"]), z_min_um=float(d["z_min_um"]),
                   z_max_um=float(d["z_max_um"]), n_z=int(d["n_z"]), rank=int(d["rank"]),
                   dx_hr_um=float(d["dx_hr_um"]), aperture_cycles_per_um=float(d["aperture_cycles_per_um"]),
                   coarse_terms=int(d.get("coarse_terms", 0)))  # absent before format version 3: all float16


class LowRankField(nn.Module):
    """``o_z = Σ_c u_c(z)·F^-1{Ŝ_c}``: parameters ``coefficients`` (2, R, K) and ``z_line`` (2, n_z, R).

    Both are real tensors holding (real, imaginary) parts, so any optimizer treats them as
    ordinary parameters. ``index`` (a non-persistent buffer, rebuilt from the architecture)
    maps coefficient ``k`` to its flat bin in the uncentred hr spectrum.
    """

    def __init__(self, arch: LowRankArchitecture):
        super().__init__()
        self.arch = arch
        index = torch.as_tensor(aperture_index(arch.hr_shape, arch.dx_hr_um, arch.aperture_cycles_per_um))
        self.register_buffer("index", index, persistent=False)
        # decode path: the aperture's columns ("band") and each coefficient's place in the
        # transposed band (band column, hr row), so that both 1D transforms run along the last axis
        H, W = arch.hr_shape
        band_cols, col_pos = torch.unique(index % W, sorted=True, return_inverse=True)
        self.register_buffer("band_cols", band_cols, persistent=False)
        self.register_buffer("band_index", col_pos * H + index // W, persistent=False)
        self.coefficients = nn.Parameter(torch.zeros(2, arch.rank, index.numel()))
        self.z_line = nn.Parameter(torch.zeros(2, arch.n_z, arch.rank))

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_stack(cls, arch: LowRankArchitecture, fields: torch.Tensor, z_um: np.ndarray) -> "LowRankField":
        """Closed-form initialisation: truncated SVD of a complex stack ``fields`` (Z, H, W) at ``z_um``.

        The stack's band-limited spectra (planes × aperture bins) are factorised as
        ``U·Σ·Vᴴ``; ``Ŝ_c = σ_c·V_c^* / sqrt(n)`` and the z line holds ``sqrt(n)·U_c`` linearly
        interpolated from the stack's depths onto the nodes (the scaling makes ``u_0(z) ≈ 1`` and
        ``S_0`` the stack's mean field). Keeps the ``rank`` largest singular values.
        """
        net = cls(arch).to(fields.device)
        H, W = arch.hr_shape
        if tuple(fields.shape[-2:]) != (H, W):
            raise ValueError(f"stack fields are {tuple(fields.shape[-2:])}, architecture is {arch.hr_shape}")
        spectra = torch.fft.fft2(fields.to(torch.complex64), norm="ortho").flatten(1)[:, net.index]  # (n, K)
        u, s, vh = torch.linalg.svd(spectra, full_matrices=False)
        r = min(arch.rank, s.numel())
        n = spectra.shape[0]
        coef = torch.zeros(arch.rank, net.index.numel(), dtype=torch.complex64, device=fields.device)
        coef[:r] = (s[:r, None] * vh[:r]) / math.sqrt(n)
        line_at_stack = u[:, :r] * math.sqrt(n)  # (n, r) at the stack depths
        nodes = torch.as_tensor(arch.node_depths(), dtype=torch.float32, device=fields.device)
        zs = torch.as_tensor(np.asarray(z_um, dtype=np.float64), dtype=torch.float32, device=fields.device)
        line = torch.zeros(arch.n_z, arch.rank, dtype=torch.complex64, device=fields.device)
        line[:, :r] = _interp_rows(line_at_stack, zs, nodes)
        with torch.no_grad():
            net.coefficients.copy_(torch.view_as_real(coef).permute(2, 0, 1))
            net.z_line.copy_(torch.view_as_real(line).permute(2, 0, 1))
        return net

    # ---- evaluation ----------------------------------------------------------------------------
    def n_parameters(self) -> int:
        return int(sum(p.numel() for p in self.parameters()))

    def z_weights(self, z_um: torch.Tensor) -> torch.Tensor:
        """Complex ``u(z)``, shape ``(Z, R)``, linearly interpolated between nodes (clamped)."""
        line = torch.complex(self.z_line[0], self.z_line[1])  # (n_z, R)
        a = self.arch
        t = (z_um.to(torch.float32) - a.z_min_um) / (a.z_max_um - a.z_min_um) * (a.n_z - 1)
        t = t.clamp(0, a.n_z - 1)
        i0 = t.floor().long().clamp(max=a.n_z - 2)
        frac = (t - i0.to(t.dtype))[:, None]
        return line[i0] * (1 - frac) + line[i0 + 1] * frac

    def spectra(self, z_um: torch.Tensor) -> torch.Tensor:
        """In-aperture ortho spectra ``Σ_c u_c(z)·Ŝ_c``, complex ``(Z, K)``."""
        coef = torch.complex(self.coefficients[0], self.coefficients[1])  # (R, K)
        return self.z_weights(z_um) @ coef

    def full_spectrum(self, z_um: torch.Tensor, norm: str = "ortho") -> torch.Tensor:
        """Uncentred hr spectra ``(Z, H·W)`` (zero outside the aperture); ``norm`` "ortho" or "forward"."""
        H, W = self.arch.hr_shape
        vals = self.spectra(z_um)
        if norm == "forward":
            vals = vals / math.sqrt(H * W)
        out = vals.new_zeros(vals.shape[0], H * W)
        return out.index_copy(1, self.index, vals)

    def field(self, z_um: torch.Tensor) -> torch.Tensor:
        """Complex hr fields ``(Z, H, W)`` at depths ``z_um`` (differentiable)."""
        H, W = self.arch.hr_shape
        return torch.fft.ifft2(self.full_spectrum(z_um).reshape(-1, H, W), norm="ortho")

    @torch.no_grad()
    def decode(self, z_um: torch.Tensor, parts: tuple[str, ...], region=None, step: int = 1,
               ) -> tuple[torch.Tensor, ...]:
        """``parts`` ("amplitude", "phase") as ``(Z, h, w)`` float tensors over ``region``/``step``.

        The same inverse DFT as :meth:`field`, pruned to what is nonzero or asked for: the 1D
        inverse transform along y runs only over the aperture's columns (~⅓ of them at 2×
        upsampling) and keeps only the region's rows; the one along x then runs over those rows.
        Both run along the contiguous axis. Depths are decoded one at a time, so the working set
        is one hr slice.
        """
        H, W = self.arch.hr_shape
        top, left, h, w = region if region is not None else (0, 0, H, W)
        step = int(step)
        n_band = self.band_cols.numel()
        outs: list[list[torch.Tensor]] = [[] for _ in parts]
        for z in z_um.reshape(-1):
            vals = self.spectra(z.reshape(1))[0]
            band = vals.new_zeros(n_band * H).index_copy_(0, self.band_index, vals).reshape(n_band, H)
            rows = torch.fft.ifft(band, dim=-1, norm="ortho")[:, top:top + h:step].t()  # (h', n_band)
            full = rows.new_zeros(rows.shape[0], W).index_copy_(1, self.band_cols, rows)
            f = torch.fft.ifft(full, dim=-1, norm="ortho")[:, left:left + w:step]
            for k, part in enumerate(parts):
                outs[k].append(f.abs() if part == "amplitude" else f.angle())
        return tuple(torch.stack(o) for o in outs)

    # ---- storage -------------------------------------------------------------------------------
    def storage_tensors(self) -> dict[str, torch.Tensor]:
        """What a model file holds: each term's peak ``coefficient_scale`` (float32, R); the first
        ``rank - coarse_terms`` terms' coefficients as float16 real/imag relative to their peak
        (``coefficients``, 2 × R_f × K); the last ``coarse_terms`` terms in the log-polar code
        (``coefficients_logpolar``, uint8 2 × R_c × K: magnitude code, phase code; only when R_c > 0);
        the z line as float32."""
        coef = self.coefficients.detach().float().cpu()
        n_fine = self.arch.rank - self.arch.coarse_terms
        scale = coef.abs().amax(dim=(0, 2))  # (R,) float16 terms: the peak of either part
        # log-polar terms: the peak modulus, on a 2^-16 grid so that the rounded term (whose peak is that
        # value to float32 precision) gets the same scale again (round_to_storage_ idempotent: file = memory)
        scale[n_fine:] = snap_scale(torch.complex(coef[0, n_fine:], coef[1, n_fine:]).abs().amax(1).clamp_min(1e-30))
        scale = scale.clamp_min(1e-30)
        out = {"coefficients": (coef[:, :n_fine] / scale[None, :n_fine, None]).to(COEFFICIENT_STORAGE_DTYPE).contiguous(),
               "coefficient_scale": scale.contiguous(),
               "z_line": self.z_line.detach().float().cpu().contiguous()}
        if self.arch.coarse_terms:
            coarse = torch.complex(coef[0, n_fine:], coef[1, n_fine:])
            out["coefficients_logpolar"] = encode_logpolar(coarse, scale[n_fine:])
        return out

    @staticmethod
    def layout_for(a: LowRankArchitecture, n_coefficients: int) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Shape and dtype of every stored tensor (checked before anything is allocated)."""
        k = int(n_coefficients)
        out = {"coefficients": ((2, a.rank - a.coarse_terms, k), COEFFICIENT_STORAGE_DTYPE),
               "coefficient_scale": ((a.rank,), torch.float32),
               "z_line": ((2, a.n_z, a.rank), torch.float32)}
        if a.coarse_terms:
            out["coefficients_logpolar"] = ((2, a.coarse_terms, k), torch.uint8)
        return out

    @torch.no_grad()
    def load_storage_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        scale = tensors["coefficient_scale"].float()
        n_fine = self.arch.rank - self.arch.coarse_terms
        fine = tensors["coefficients"].float() * scale[None, :n_fine, None]
        if self.arch.coarse_terms:
            coarse = torch.view_as_real(decode_logpolar(tensors["coefficients_logpolar"], scale[n_fine:]))
            fine = torch.cat([fine, coarse.permute(2, 0, 1).to(fine.device)], dim=1)
        self.coefficients.copy_(fine)
        self.z_line.copy_(tensors["z_line"].float())

    @torch.no_grad()
    def round_to_storage_(self) -> "LowRankField":
        """Round the parameters to what a saved file holds, so file and memory decode alike."""
        self.load_storage_tensors({k: v.to(self.coefficients.device) for k, v in self.storage_tensors().items()})
        return self

    @torch.no_grad()
    def node_matrix(self) -> torch.Tensor:
        """``N = L·C`` (n_z × K, complex128): the spectrum of every node plane; any depth decodes as
        ``φ(z)ᵀ·N`` with ``φ`` the (clamped) linear interpolation weights."""
        line, coef = self._factors128()
        return line @ coef

    def _factors128(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The z line ``L`` (n_z × R) and coefficients ``C`` (R × K), complex128 on the CPU."""
        line = torch.complex(self.z_line[0], self.z_line[1]).detach().cpu().to(torch.complex128)
        coef = torch.complex(self.coefficients[0], self.coefficients[1]).detach().cpu().to(torch.complex128)
        return line, coef

    # ---- compaction ----------------------------------------------------------------------------
    @torch.no_grad()
    def compaction(self, tolerance_db: float = COMPACTION_TOLERANCE_DB) -> "Compaction":
        """The exact re-factorisation of this field and the rank that ``tolerance_db`` keeps.

        Every decodable spectrum is ``φ(z)ᵀ·N`` with ``N = L·C`` the node matrix (``n_z × K``:
        the z line ``L`` (n_z × R) times the coefficients ``C`` (R × K)) and ``φ(z)`` the linear
        interpolation weights (at most two nonzero, ``≥ 0``, summing to 1, so ``‖φ‖₂ ≤ 1``).
        ``L = Q·R_L`` (QR) and ``R_L·C = U·Σ·Vᴴ`` (SVD) give ``N = (Q·U)·Σ·Vᴴ`` exactly, with at
        most ``min(n_z, R)`` terms. Keeping the first ``r`` terms changes every decoded plane by
        ``‖φᵀ·ΔN‖ ≤ ‖ΔN‖₂ = σ_{r+1}`` (field energy: the coefficients are unitary-DFT bins). The
        kept rank is the smallest ``r`` with ``σ_{r+1} ≤ 10^(tolerance_db/20) · min_z ‖o_z‖``,
        the minimum taken over *every* decodable depth (exactly: per node interval the energy of
        the interpolated plane is a quadratic in the interpolation fraction), so that no plane at
        any depth changes by more than ``tolerance_db`` relative to its own energy.
        """
        line, coef = self._factors128()  # (n_z, R), (R, K)
        q, r_l = torch.linalg.qr(line)  # (n_z, m), (m, R)
        u, s, vh = torch.linalg.svd(r_l @ coef, full_matrices=False)  # (m, m), (m,), (m, K)
        nodes = (q @ u) * s[None, :]  # node planes in the orthonormal basis Vᴴ: same norms as N's rows
        a, b = nodes[:-1], nodes[1:]
        d = b - a
        dd = d.abs().square().sum(1)
        t = (-(a.conj() * d).real.sum(1) / dd.clamp_min(1e-300)).clamp(0, 1)
        t = torch.where(dd > 0, t, torch.zeros_like(t))
        min_energy = (a + t[:, None] * d).abs().square().sum(1).min().clamp_min(0)
        min_norm = float(min_energy.sqrt())
        threshold = 10 ** (float(tolerance_db) / 20) * min_norm
        keep = max(1, int((s > threshold).sum()))
        tail = float(s[keep]) if keep < s.numel() else 0.0
        return Compaction(q @ u, s, vh, keep, min_norm, tail, float(tolerance_db))

    @torch.no_grad()
    def compacted(self, tolerance_db: float = COMPACTION_TOLERANCE_DB) -> "LowRankField":
        """A new field of the rank :meth:`compaction` keeps, its weakest terms in the 16-bit log-polar code
        where that fits the tolerance, the same architecture otherwise, rounded to storage.

        Rate allocation (transform coding): with ``B = 10^(tolerance_db/20) · min_z ‖o_z‖`` the
        compaction's budget, the number of log-polar terms is the largest ``c`` (the ``c`` weakest
        terms, never the first) for which, *measured*, (a) the stored field differs from this one by at
        most ``B`` at every depth (truncation, float16 and log-polar rounding, float32 z line together)
        and (b) the codes alone (the field with ``c`` log-polar terms against the same field all float16)
        change no plane by more than ``B · 10^(CODE_SHARE_DB/20)``. A change at depth ``z`` is
        ``φ(z)ᵀ·ΔN`` with ``ΔN`` the difference of the node matrices; ``‖(1-t)·ΔN_i + t·ΔN_{i+1}‖`` is
        convex in ``t``, so its maximum over every depth is the largest row norm of ``ΔN``, computed
        exactly. ``c = 0`` (every term float16, the former storage) is always allowed: its change is
        the truncation tail plus float16 rounding (~-70 dB). ``compaction_report``
        (:meth:`Compaction.report`) adds each term's code, the stored field's worst change
        (``stored_change_db``), that of the codes alone (``code_change_db``) and each term's rounding
        alone (``term_change_db``), all relative to the weakest plane. Never raises the rank."""
        plan = self.compaction(tolerance_db)
        r = min(plan.rank, self.arch.rank)
        line, coef = plan.terms(r)
        reference = self.node_matrix()
        budget = 10 ** (float(tolerance_db) / 20) * plan.min_plane_norm
        code_budget = budget * 10 ** (CODE_SHARE_DB / 20)
        chosen, all_float16 = None, None
        for coarse in range(r):
            out = LowRankField(dataclasses.replace(self.arch, rank=r, coarse_terms=coarse)).to(self.coefficients.device)
            out.coefficients.copy_(torch.view_as_real(coef.to(torch.complex64)).permute(2, 0, 1))
            out.z_line.copy_(torch.view_as_real(line.to(torch.complex64)).permute(2, 0, 1))
            out.round_to_storage_()
            nodes = out.node_matrix()
            all_float16 = nodes if all_float16 is None else all_float16
            change, code_change = worst_row(reference - nodes), worst_row(nodes - all_float16)
            if chosen is not None and (change > budget or code_change > code_budget):
                break
            chosen = (out, change, code_change)
        out, change, code_change = chosen
        ref = max(plan.min_plane_norm, 1e-300)
        stored = torch.complex(out.coefficients[0], out.coefficients[1]).detach().cpu().to(torch.complex128)
        stored_line = torch.complex(out.z_line[0], out.z_line[1]).detach().cpu().to(torch.complex128)
        term_change = stored_line.abs().amax(0) * (stored - coef).abs().square().sum(1).sqrt()  # (r,)
        out.compaction_report = {**plan.report(), "encodings": list(out.arch.term_encodings),
                                 "stored_change_db": db(change, ref), "code_change_db": db(code_change, ref),
                                 "term_change_db": [db(float(v), ref) for v in term_change]}
        return out


def _interp_rows(values: torch.Tensor, x: torch.Tensor, x_new: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of the rows of ``values`` (n, r) given at increasing ``x`` onto ``x_new``."""
    if x.numel() == 1:
        return values.expand(x_new.numel(), -1).clone()
    order = torch.argsort(x)
    x, values = x[order], values[order]
    j = torch.searchsorted(x, x_new).clamp(1, x.numel() - 1)
    x0, x1 = x[j - 1], x[j]
    frac = ((x_new - x0) / (x1 - x0)).clamp(0, 1)[:, None]
    return values[j - 1] * (1 - frac) + values[j] * frac
