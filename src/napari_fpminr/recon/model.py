"""``Model``: a reconstructed FPM-INR z-stack — its representation plus the optics and z range.

The representation is either the band-limited low-rank field (:class:`recon.lowrank.LowRankField`,
the default) or the paper's feature-plane networks (:class:`recon.inr.FPMINR`); both decode
through the same ``decode``/``storage_*`` interface. A model is continuous: :meth:`Model.render` decodes any depth ``z`` (µm, DESIGN.md sign: a thin
sample at depth ``z0`` is in focus at ``z = z0``), any hr region and any xy step, on demand,
without retraining. Amplitudes are relative to the bright-field background (transparent ≈ 1);
phases are in radians.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from ..optics.system import Optics
from .inr import FPMINR
from .lowrank import LowRankField
from .schedule import default_z_planes

PARTS = ("amplitude", "phase")


class Model:
    """A continuous reconstruction.

    Args:
        net: the representation: a :class:`LowRankField` or an :class:`FPMINR`.
        optics: the microscope (with the recovered pupil when pupil recovery ran).
        lr_shape: ``(h, w)`` of the raw images it was trained on.
        meta: JSON-safe facts (training summary, source data hash, ...).
    """

    def __init__(self, net: LowRankField | FPMINR, optics: Optics, lr_shape: tuple[int, int], meta: dict[str, Any] | None = None):
        self.net = net.eval()
        self.optics = optics
        self.lr_shape = (int(lr_shape[0]), int(lr_shape[1]))
        self.meta: dict[str, Any] = dict(meta or {})
        expected = (self.lr_shape[0] * optics.upsample, self.lr_shape[1] * optics.upsample)
        if tuple(net.arch.hr_shape) != expected:
            raise ValueError(f"network hr grid {net.arch.hr_shape} does not match optics/raw size {expected}")
        self._id_cache: tuple[tuple[int, ...], str] | None = None

    # ---- facts ---------------------------------------------------------------------------
    @property
    def arch(self):
        """The representation's architecture (``LowRankArchitecture`` or ``INRArchitecture``)."""
        return self.net.arch

    @property
    def representation(self) -> str:
        """"lowrank" or "mlp"."""
        return "lowrank" if isinstance(self.net, LowRankField) else "mlp"

    @property
    def hr_shape(self) -> tuple[int, int]:
        return self.net.arch.hr_shape

    @property
    def z_min_um(self) -> float:
        return float(self.net.arch.z_min_um)

    @property
    def z_max_um(self) -> float:
        return float(self.net.arch.z_max_um)

    @property
    def dx_hr_um(self) -> float:
        return self.optics.dx_hr_um

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def n_parameters(self) -> int:
        return self.net.n_parameters()

    def to(self, device: str | torch.device) -> "Model":
        self.net.to(device)
        return self

    def z_planes(self, z_step_um: float = 0.25) -> np.ndarray:
        """Uniform sampling of the model's z range (161 planes over ±20 µm at 0.25 µm)."""
        return default_z_planes(self.z_min_um, self.z_max_um, z_step_um)

    def trained_on(self, raw) -> bool:
        """True when ``raw`` (a RawData) has the content the model was trained on.

        Compares the raw image size and the content hash recorded at training
        (``meta["source_hash"]``); a model without a recorded hash only checks the size.
        """
        if tuple(raw.lr_shape) != tuple(self.lr_shape):
            return False
        want = (self.meta or {}).get("source_hash")
        return not want or raw.content_hash() == want

    @property
    def model_id(self) -> str:
        """Content hash of the parameters: equal for equal weights, changes whenever they change."""
        versions = tuple(p._version for p in self.net.parameters())
        if self._id_cache is None or self._id_cache[0] != versions:
            h = hashlib.sha1()
            h.update(repr(self.net.arch.to_dict()).encode())
            for p in self.net.parameters():
                h.update(p.detach().cpu().contiguous().numpy().tobytes())
            self._id_cache = (versions, h.hexdigest()[:16])
        return self._id_cache[1]

    # ---- decoding ------------------------------------------------------------------------
    @torch.no_grad()
    def render_parts(self, z_um, parts: tuple[str, ...] = PARTS,
                     region: tuple[int, int, int, int] | None = None, step: int = 1) -> tuple[np.ndarray, ...]:
        """Decode the requested parts (``"amplitude"``, ``"phase"``) at depths ``z_um``.

        Returns one float32 ``(Z, h, w)`` array per part; ``region = (top, left, height, width)``
        in hr pixels (default: the whole grid), ``step`` samples every ``step``-th hr pixel.
        """
        bad = [p for p in parts if p not in PARTS]
        if bad:
            raise ValueError(f"unknown part(s) {bad}; use {PARTS}")
        z = torch.as_tensor(np.atleast_1d(np.asarray(z_um, dtype=np.float32)), device=self.device).reshape(-1)
        H, W = self.hr_shape
        top, left, height, width = (0, 0, H, W) if region is None else (int(v) for v in region)
        if step < 1 or height < 1 or width < 1 or top < 0 or left < 0 or top + height > H or left + width > W:
            raise ValueError(f"region {region} with step {step} is outside the {H}x{W} hr grid")
        out = self.net.decode(z, tuple(parts), (top, left, height, width), int(step))
        return tuple(o.float().cpu().numpy() for o in out)

    def render(self, z_um, region: tuple[int, int, int, int] | None = None, step: int = 1
               ) -> tuple[np.ndarray, np.ndarray]:
        """``(amplitude, phase)``, each float32 ``(Z, h, w)``, at depths ``z_um`` (scalar or sequence)."""
        amplitude, phase = self.render_parts(z_um, PARTS, region, step)
        return amplitude, phase

    def field(self, z_um, region=None, step: int = 1) -> np.ndarray:
        """Complex field ``amplitude · exp(i·phase)``, complex64 ``(Z, h, w)``."""
        a, p = self.render(z_um, region, step)
        return (a * np.exp(1j * p)).astype(np.complex64)

    def summary(self) -> str:
        a = self.arch
        if self.representation == "lowrank":
            kind = (f"low-rank field, rank {a.rank}: {self.net.index.numel():,} spectral coefficients per term "
                    f"(synthetic aperture {a.aperture_cycles_per_um:.3f} cycles/um)")
            if a.coarse_terms:
                kind += f"; the weakest {a.coarse_terms} stored in the 16-bit log-polar code"
        else:
            hc, wc = a.plane_shape
            kind = f"amplitude + phase MLPs: feature plane {hc}x{wc}x{a.q}, MLP {a.q}-{a.q}-{a.q}-1"
        return "\n".join([
            f"z range        {self.z_min_um:g} .. {self.z_max_um:g} um ({a.n_z} z-line nodes)",
            f"hr grid        {self.hr_shape[0]} x {self.hr_shape[1]} px of {self.dx_hr_um:.4f} um",
            f"representation {kind}",
            f"parameters     {self.n_parameters:,}",
        ])

    def __repr__(self) -> str:
        return (f"Model(hr_shape={self.hr_shape}, z=[{self.z_min_um:g}, {self.z_max_um:g}] um, "
                f"params={self.n_parameters}, id={self.model_id})")
