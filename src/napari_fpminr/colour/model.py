"""``ColourModel``: three channel models (red, green, blue) and their registration, decoded as colour.

Each channel keeps its own model (optics, wavelength, pupil, z range, trained on its own data);
the registration maps the common frame onto each channel:

* z: the common z axis is the reference (green, middle-wavelength) channel's; channel ``c``
  is decoded at ``z + z_offset_um[c]`` (its best focus minus the reference's);
* lateral: channel ``c`` is shifted by ``-shift_px[c]`` (common hr px, ``(dy, dx)``) so that it
  lies on the reference; every channel is on the same hr grid (one upsample for all);
* white balance: ``transmittance = |o|² / white[c]`` (bare glass = 1 in every channel).

Decoding a low-rank channel multiplies its in-aperture spectrum by the shift's phase ramp before
the same pruned inverse DFT as :meth:`LowRankField.decode` (no extra FFT); an MLP channel is
decoded whole and shifted by an FFT pair. ``rgb`` is 8-bit sRGB of the transmittances.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..recon.lowrank import COMPACTION_TOLERANCE_DB, LowRankField
from ..recon.model import Model
from .colourmath import _LUT, _LUT_SIZE, srgb_uint8
from .register import fourier_shift

__all__ = ["CHANNELS", "ChannelRegistration", "ColourModel", "ColourSlices"]

CHANNELS = ("red", "green", "blue")
REFERENCE = 1  # the green (middle-wavelength) channel carries the common z axis and lateral frame


@dataclass
class ChannelRegistration:
    """How one channel maps onto the common frame (module docstring); JSON-safe."""

    wavelength_um: float
    focus_um: float  # best focus measured in the channel's own z
    z_offset_um: float  # channel z minus common z
    shift_px: tuple[float, float] = (0.0, 0.0)  # (dy, dx) common hr px of the channel relative to the reference
    white: float = 1.0  # bare-glass |o|² of the channel
    # the linear part A (row-major (yy, yx, xy, xx)) of the channel's field-varying misregistration
    # d(p) = shift_px + A·(p - centre), for the record: already applied to the channel's coefficients (inr)
    # or fields (fpm) by the colour job (affine.fit_affine); decoding applies only shift_px
    linear: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shift_px"] = [float(v) for v in self.shift_px]
        d["linear"] = [float(v) for v in self.linear]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ChannelRegistration":
        shift = tuple(float(v) for v in d.get("shift_px", (0.0, 0.0)))
        if len(shift) != 2:
            raise ValueError("shift_px must be (dy, dx)")
        linear = tuple(float(v) for v in d.get("linear", (0.0, 0.0, 0.0, 0.0)))
        if len(linear) != 4:
            raise ValueError("linear must be (yy, yx, xy, xx)")
        reg = cls(float(d["wavelength_um"]), float(d["focus_um"]), float(d["z_offset_um"]), shift,
                  float(d.get("white", 1.0)), linear)
        if not all(math.isfinite(v) for v in (reg.wavelength_um, reg.focus_um, reg.z_offset_um, *shift, reg.white,
                                              *linear)) \
                or reg.white <= 0 or reg.wavelength_um <= 0:
            raise ValueError("registration values must be finite, white and wavelength positive")
        return reg


@dataclass
class ColourSlices:
    """Decoded colour planes: ``transmittance``, ``amplitude``, ``phase`` float32 ``(Z, 3, h, w)`` (R, G, B)."""

    transmittance: np.ndarray
    amplitude: np.ndarray | None = None
    phase: np.ndarray | None = None

    @property
    def rgb(self) -> np.ndarray:
        """8-bit sRGB ``(Z, h, w, 3)``."""
        return srgb_uint8(np.moveaxis(self.transmittance, 1, -1))


@dataclass
class ColourModel:
    """Three channel :class:`Model` s (R, G, B) and their :class:`ChannelRegistration` s."""

    channels: tuple[Model, Model, Model]
    registration: tuple[ChannelRegistration, ChannelRegistration, ChannelRegistration]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.channels) != 3 or len(self.registration) != 3:
            raise ValueError("a colour model has exactly three channels (red, green, blue)")
        shapes = {tuple(m.hr_shape) for m in self.channels}
        if len(shapes) != 1:
            raise ValueError(f"channels are on different hr grids {sorted(shapes)}")
        dxs = [m.dx_hr_um for m in self.channels]
        if max(dxs) - min(dxs) > 1e-6 * max(dxs):
            raise ValueError(f"channels have different hr pixels {dxs} um")
        lo, hi = self.z_range_um
        if not hi >= lo:
            raise ValueError("the channels' z ranges, shifted by the focus offsets, do not overlap")
        self._ramps: dict[int, torch.Tensor] = {}

    # ---- facts -----------------------------------------------------------------------------
    @property
    def hr_shape(self) -> tuple[int, int]:
        return tuple(self.channels[0].hr_shape)

    @property
    def dx_hr_um(self) -> float:
        return float(self.channels[REFERENCE].dx_hr_um)

    @property
    def upsample(self) -> int:
        return int(self.channels[REFERENCE].optics.upsample)

    @property
    def z_range_um(self) -> tuple[float, float]:
        """The common z range: where every channel's shifted range covers."""
        lo = max(m.z_min_um - r.z_offset_um for m, r in zip(self.channels, self.registration, strict=True))
        hi = min(m.z_max_um - r.z_offset_um for m, r in zip(self.channels, self.registration, strict=True))
        return float(lo), float(hi)

    @property
    def z_min_um(self) -> float:
        return self.z_range_um[0]

    @property
    def z_max_um(self) -> float:
        return self.z_range_um[1]

    @property
    def model_id(self) -> str:
        return "colour-" + "-".join(m.model_id[:8] for m in self.channels)

    def z_planes(self, z_step_um: float = 0.25) -> np.ndarray:
        from ..recon.schedule import default_z_planes

        return default_z_planes(self.z_min_um, self.z_max_um, z_step_um)

    def to(self, device) -> "ColourModel":
        for m in self.channels:
            m.to(device)
        self._ramps.clear()
        return self

    def compacted(self, tolerance_db: float = COMPACTION_TOLERANCE_DB) -> "ColourModel":
        """The same colour model with each low-rank channel exactly re-factored, truncated to the rank
        its data need and its weakest terms stored in the 16-bit log-polar code
        (:meth:`LowRankField.compacted`: no decoded plane of any channel, at any depth, changes by more
        than ``tolerance_db`` of the weakest plane's energy, float16 rounding of the strong terms
        aside); the registration is shared, MLP channels are kept as they are. ``meta["compaction"]``
        records per channel the rank before and after, the truncation bound, the singular values, each
        term's storage code and the stored field's measured worst change (dB)."""
        channels, reports = [], []
        for m in self.channels:
            if isinstance(m.net, LowRankField):
                before = m.net.arch.rank
                net = m.net.compacted(tolerance_db)
                reports.append({"rank_before": before, **net.compaction_report})
                m = Model(net, m.optics, m.lr_shape, dict(m.meta))
            else:
                reports.append(None)
            channels.append(m)
        return ColourModel(tuple(channels), self.registration, dict(self.meta, compaction=reports))

    def summary(self) -> str:
        lines = [f"colour model: {self.hr_shape[0]} x {self.hr_shape[1]} px of {self.dx_hr_um:.4f} um, "
                 f"z {self.z_min_um:g} .. {self.z_max_um:g} um (the green channel's axis)"]
        for name, m, r in zip(CHANNELS, self.channels, self.registration, strict=True):
            lines.append(f"  {name:5s} {1000 * r.wavelength_um:.0f} nm: best focus {r.focus_um:+.2f} um "
                         f"(offset {r.z_offset_um:+.2f} um), shift ({r.shift_px[0] / self.upsample:+.3f}, "
                         f"{r.shift_px[1] / self.upsample:+.3f}) raw px, white {r.white:.3f}, {m.representation}")
        return "\n".join(lines)

    # ---- decoding ----------------------------------------------------------------------------
    def _ramp(self, c: int) -> torch.Tensor:
        """Phase ramp on channel ``c``'s aperture bins that moves it by ``-shift_px[c]``."""
        if c not in self._ramps:
            net = self.channels[c].net
            H, W = self.hr_shape
            idx = net.index.to(torch.float64)
            fy = torch.fft.fftfreq(H, dtype=torch.float64, device=idx.device)[(idx // W).long()]
            fx = torch.fft.fftfreq(W, dtype=torch.float64, device=idx.device)[(idx % W).long()]
            dy, dx = self.registration[c].shift_px
            self._ramps[c] = torch.polar(torch.ones_like(fy), 2 * math.pi * (fy * dy + fx * dx)).to(torch.complex64)
        return self._ramps[c]

    @torch.no_grad()
    def channel_field(self, c: int, z_um: float, region=None, step: int = 1) -> torch.Tensor:
        """Channel ``c`` at common depth ``z_um`` on the common frame: complex ``(h, w)`` (not white-balanced)."""
        model = self.channels[c]
        reg = self.registration[c]
        H, W = self.hr_shape
        top, left, h, w = (0, 0, H, W) if region is None else (int(v) for v in region)
        z = torch.tensor([float(z_um) + reg.z_offset_um], dtype=torch.float32, device=model.device)
        net = model.net
        if isinstance(net, LowRankField):
            vals = net.spectra(z)[0] * self._ramp(c)
            band = vals.new_zeros(net.band_cols.numel() * H).index_copy_(0, net.band_index, vals)
            band = band.reshape(-1, H)
            rows = torch.fft.ifft(band, dim=-1, norm="ortho")[:, top:top + h:step].t()
            full = rows.new_zeros(rows.shape[0], W).index_copy_(1, net.band_cols, rows)
            return torch.fft.ifft(full, dim=-1, norm="ortho")[:, left:left + w:step]
        amp, pha = net.decode(z, ("amplitude", "phase"))
        f = fourier_shift(torch.polar(amp[0].float(), pha[0].float()), -reg.shift_px[0], -reg.shift_px[1])
        return f[top:top + h:step, left:left + w:step]

    def render(self, z_um, region=None, step: int = 1, parts: tuple[str, ...] = ("transmittance",)) -> ColourSlices:
        """Decode ``parts`` ("transmittance", "amplitude", "phase") at common depths ``z_um``.

        Amplitudes are white-balanced like the transmittance (``|o| / sqrt(white)``).
        """
        z = np.atleast_1d(np.asarray(z_um, dtype=np.float64)).reshape(-1)
        H, W = self.hr_shape
        top, left, h, w = (0, 0, H, W) if region is None else (int(v) for v in region)
        self._check(z, top, left, h, w, step, region)
        out = {p: [] for p in parts}
        for zv in z:
            per = {p: [] for p in parts}
            for c in range(3):
                f = self.channel_field(c, float(zv), (top, left, h, w), step)
                white = self.registration[c].white
                if "transmittance" in per:
                    per["transmittance"].append((f.real.square() + f.imag.square()) / white)
                if "amplitude" in per:
                    per["amplitude"].append(f.abs() / math.sqrt(white))
                if "phase" in per:
                    per["phase"].append(f.angle())
            for p in parts:
                out[p].append(torch.stack(per[p]).float().cpu().numpy())
        arrays = {p: np.stack(v) for p, v in out.items()}
        return ColourSlices(arrays.get("transmittance"), arrays.get("amplitude"), arrays.get("phase"))

    @torch.no_grad()
    def rgb(self, z_um, region=None, step: int = 1) -> np.ndarray:
        """8-bit sRGB ``(Z, h, w, 3)`` at common depths ``z_um`` (the display path: each channel's
        ``|o|²/white`` goes straight through the sRGB table into its plane of the output)."""
        z = np.atleast_1d(np.asarray(z_um, dtype=np.float64)).reshape(-1)
        H, W = self.hr_shape
        top, left, h, w = (0, 0, H, W) if region is None else (int(v) for v in region)
        self._check(z, top, left, h, w, step, region)
        h_out, w_out = len(range(0, h, step)), len(range(0, w, step))
        out = np.empty((z.size, h_out, w_out, 3), np.uint8)
        for k, zv in enumerate(z):
            for c in range(3):
                f = self.channel_field(c, float(zv), (top, left, h, w), step)
                t = f.abs().square_().mul_((_LUT_SIZE - 1) / self.registration[c].white).add_(0.5)
                idx = t.clamp_(0, _LUT_SIZE - 1).to(torch.int32).cpu().numpy()
                out[k, :, :, c] = _LUT[idx]
        return out

    def _check(self, z: np.ndarray, top, left, h, w, step, region) -> None:
        lo, hi = self.z_range_um
        bad = z[(z < lo - 1e-6) | (z > hi + 1e-6)]
        if bad.size:
            raise ValueError(f"z = {bad[0]:g} um is outside the colour model's range [{lo:g}, {hi:g}] um")
        H, W = self.hr_shape
        if step < 1 or h < 1 or w < 1 or top < 0 or left < 0 or top + h > H or left + w > W:
            raise ValueError(f"region {region} with step {step} is outside the {H}x{W} hr grid")
