"""Synthetic FPM datasets with known ground truth (shared/DESIGN.md §1, §5).

Image formation for a sample made of thin layers ``t_l`` at depths ``z_l`` (µm):

1. Multislice in the tilted-illumination frame. For LED ``i`` the field behind the sample is
   ``u_i(r) = e_i(r) · exp(i·2π·k_i·r)`` with ``k_i = (na_x, na_y)/λ`` exact (the envelope is
   periodic on the hr grid, the tilt need not be: see "illumination off the frequency grid" in
   :mod:`~napari_fpminr.optics.forward`). Only the envelope ``e_i`` is stored on the hr grid. With the forward model's sign (the image of a layer at depth ``z`` is
   its exit field propagated by ``exp(i·kz·z)``), a layer at larger ``z`` lies further upstream:
   the illumination crosses the layers in order of decreasing ``z``. Between two consecutive
   layers ``z_a > z_b`` the envelope is propagated by ``d = z_a - z_b`` with the angular spectrum
   evaluated at the *absolute* frequency ``k_env + k_i``:
   ``E_i(k_env) ← E_i(k_env) · exp(i·2π·sqrt(1/λ² - |k_env + k_i|²)·d)`` (evanescent waves
   dropped), then multiplied by the next layer's transmittance. All LEDs are propagated in one
   batched tensor (chunked only to bound memory); there is a Python loop over layers only.
2. FPM imaging of the envelope behind the last (lowest) layer ``z_L`` exactly as
   :class:`FPMForward` does at defocus ``z_L``: snapped window of the centred hr spectrum, times
   the LED's transfer at its sub-bin shifted coordinates (:meth:`FPMForward.led_transfer`),
   inverse FFT on the raw grid, ``|·|²``. A single layer at ``z0``
   therefore gives exactly ``FPMForward.intensities(t, z0)``.

Tilted slide (like the paper's blood smear): one thin layer of stained cells whose depth varies
linearly across x, ``depth = z_centre + tan(angle)·(x - x_centre)``. A stained smear is
absorption-dominant, so its cells default to a weak phase (``phase_max_rad`` 0.15 rad; the
absorption is that of :func:`cell_layer`, 10–70 %). The paper's slide is tilted by ~4° over a
field of millimetres; the small fields simulated here (11–22 µm at 32–64 raw pixels) would then
span < 1.5 µm of depth, invisible next to the depth of field. The default therefore fixes the
depth span instead: ``depth_range_um`` (−4, +4) µm across the field, about one depth of field of
the objective (``λ/NA_obj²`` ≈ 8.4 µm) and four of the synthetic aperture (``λ/NA_syn²`` ≈ 2.1
µm), so the slide is visibly in and out of focus across the field (the angle follows from the
field width: 20° at 64 raw pixels). Pass ``angle_deg`` (with ``z_centre_um``) for a fixed angle.
It is simulated as vertical strips, one thin layer per depth bin of ``bin_um`` (default 0.5 µm),
each equal to the slide inside its strip and transparent elsewhere; the depth is thus quantized
to the bin centres (error at most ``bin_um/2``, below the synthetic depth of field).

Intensities are in units of the bright-field background (a transparent sample gives 1 under every
bright-field LED). Optional noise: additive Gaussian with standard deviation ``noise`` (same units)
and/or Poisson shot noise with ``photons`` photons at the background level.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .device import resolve_device
from .errors import FPMInputError
from .io.atomic import atomic_write
from .optics.forward import FPMForward
from .optics.led_array import LEDArray
from .optics.presets import paper_leds, paper_optics
from .optics.samples import band_limit, cell_layer, structure_mask
from .optics.system import Optics
from .rawdata import RawData

__all__ = ["PRESETS", "Simulation", "Truth", "multislice_intensities", "paper_optics", "simulate"]

PRESETS = ("layers", "tilted", "single", "slide")
_LED_ELEMENTS = 1 << 23  # complex elements per LED chunk in the multislice (64 MiB)


@dataclass(frozen=True, eq=False)
class Truth:
    """Ground truth of a simulation.

    Attributes:
        amplitude, phase: ``(L, H, W)`` float32 per-layer transmittance on the hr grid,
            band-limited to the synthetic NA (``na_obj + max illumination NA``): the best any
            reconstruction can recover.
        z_um: ``(L,)`` depth of each layer (µm); for the tilted slide the depth at the field centre.
        depth_um: ``(H, W)`` depth of the structure at each pixel, NaN where the sample is transparent.
        dx_hr_um: hr pixel (µm).
        meta: preset, seed and options.
    """

    amplitude: np.ndarray
    phase: np.ndarray
    z_um: np.ndarray
    depth_um: np.ndarray
    dx_hr_um: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return int(self.amplitude.shape[0])

    def mask(self, layer: int) -> np.ndarray:
        """Pixels whose structure belongs to ``layer`` (depth map equal to that layer's depth)."""
        if self.meta.get("preset") in ("tilted", "slide"):
            return np.isfinite(self.depth_um)
        return np.isclose(self.depth_um, self.z_um[layer])

    def save(self, path: str | Path) -> Path:
        """Write ``amplitude``, ``phase``, ``z_um``, ``depth_um``, ``dx_hr_um`` and JSON ``meta`` to npz, atomically."""
        path = Path(path)
        with atomic_write(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, amplitude=self.amplitude, phase=self.phase, z_um=self.z_um,
                                depth_um=self.depth_um, dx_hr_um=np.float64(self.dx_hr_um),
                                meta=np.str_(json.dumps(self.meta)))
        return path


@dataclass(frozen=True, eq=False)
class Simulation:
    """A synthetic dataset: raw measurement plus its ground truth."""

    raw: RawData
    truth: Truth


def _illumination(fwd: FPMForward) -> torch.Tensor:
    """``(N, 2)`` illumination frequencies ``(k_y, k_x)`` (cycles/µm) as FPMForward models them:
    the snapped bin plus the sub-bin residual (zero when ``fwd`` snaps)."""
    h, w = fwd.lr_shape
    H, W = fwd.hr_shape
    dx = fwd.optics.dx_lr_um
    off_y = (fwd.window_top + h // 2 - H // 2).to(torch.float64)
    off_x = (fwd.window_left + w // 2 - W // 2).to(torch.float64)
    return torch.stack([-off_y / (h * dx), -off_x / (w * dx)], dim=1) + fwd.led_shift


def multislice_intensities(layers: torch.Tensor, z_um, fwd: FPMForward) -> torch.Tensor:
    """Raw intensities ``(N, h, w)`` of thin layers ``(L, H, W)`` at depths ``z_um`` (see module docstring)."""
    z = np.asarray(z_um, dtype=np.float64).reshape(-1)
    if layers.ndim != 3 or layers.shape[0] != z.size:
        raise ValueError(f"need (L, H, W) layers and L depths, got {tuple(layers.shape)} and {z.size}")
    dev = fwd.device
    layers = layers.to(device=dev, dtype=torch.complex64)
    order = np.argsort(-z, kind="stable")  # upstream (largest z) first
    H, W = fwd.hr_shape
    h, w = fwd.lr_shape
    lam = fwd.optics.wavelength_um
    fy = torch.fft.fftfreq(H, fwd.optics.dx_hr_um, dtype=torch.float64, device=dev)[:, None]
    fx = torch.fft.fftfreq(W, fwd.optics.dx_hr_um, dtype=torch.float64, device=dev)[None, :]
    k_ill = _illumination(fwd)
    z_last = float(z[order[-1]])
    out = torch.empty((fwd.n_leds, h, w), dtype=torch.float32, device=dev)
    chunk = max(1, _LED_ELEMENTS // (H * W))
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    for start in range(0, fwd.n_leds, chunk):
        leds = torch.arange(start, min(start + chunk, fwd.n_leds), device=dev)
        env = layers[order[0]].expand(len(leds), H, W).clone()
        if z.size > 1:
            ky = fy[None] + k_ill[leds, 0, None, None]
            kx = fx[None] + k_ill[leds, 1, None, None]
            arg = 1.0 / lam**2 - (kx**2 + ky**2)
            propagating = arg > 0
            kz = (2.0 * math.pi * torch.sqrt(arg.clamp_min(0.0))).to(torch.float32)
            for prev, nxt in zip(order[:-1], order[1:], strict=True):
                d_um = float(z[prev] - z[nxt])
                prop = torch.polar(propagating.to(torch.float32), kz * d_um)
                env = torch.fft.ifft2(torch.fft.fft2(env) * prop) * layers[nxt]
        spec = fwd.spectrum(env)
        rows = (fwd.window_top[leds][:, None] + ar_h[None])[:, :, None]
        cols = (fwd.window_left[leds][:, None] + ar_w[None])[:, None, :]
        win = spec[torch.arange(len(leds), device=dev)[:, None, None], rows, cols]
        field_lr = fwd.inverse_spectrum(win * fwd.led_transfer(z_last, leds)[0])
        out[leds] = field_lr.real.square() + field_lr.imag.square()
    return out


def _layers_sample(shape, dx_um, rng, z_um=(-12.0, 0.0, 12.0), **cell_options):
    z = np.asarray(z_um, dtype=np.float64).reshape(-1)
    if z.size == 0 or not np.all(np.isfinite(z)):
        raise FPMInputError(f"layer depths z_um must be finite numbers, got {z_um!r}")
    layers = np.stack([cell_layer(shape, dx_um, rng, **cell_options) for _ in z])
    return layers, z, layers, z, {"z_um": z.tolist()}


def _single_sample(shape, dx_um, rng, z_um=0.0, **cell_options):
    z = float(z_um)
    if not math.isfinite(z):
        raise FPMInputError(f"z_um must be a finite number, got {z_um!r}")
    layer = cell_layer(shape, dx_um, rng, **cell_options)[None]
    return layer, np.array([z]), layer, np.array([z]), {"z_um": z}


TILTED_DEPTH_RANGE_UM = (-4.0, 4.0)
TILTED_PHASE_MAX_RAD = 0.15


def _tilted_sample(shape, dx_um, rng, depth_range_um=TILTED_DEPTH_RANGE_UM, angle_deg=None, z_centre_um=None,
                   bin_um=0.5, **cell_options):
    H, W = shape
    cell_options.setdefault("phase_max_rad", TILTED_PHASE_MAX_RAD)  # stained smear: absorption-dominant
    width_um = W * dx_um
    x_um = (np.arange(W) - (W - 1) / 2.0) * dx_um
    if angle_deg is None:
        lo, hi = (float(v) for v in depth_range_um)
        slope = (hi - lo) / width_um
        centre = 0.5 * (lo + hi) if z_centre_um is None else float(z_centre_um)
    else:
        slope = math.tan(math.radians(float(angle_deg)))
        centre = 0.0 if z_centre_um is None else float(z_centre_um)
    if not (bin_um > 0 and math.isfinite(slope) and math.isfinite(centre)):
        raise FPMInputError("tilted preset needs a finite angle/depth range and bin_um > 0")
    depth_x = centre + slope * x_um  # (W,)
    slide = cell_layer(shape, dx_um, rng, **cell_options)
    bins = np.round((depth_x - centre) / bin_um).astype(np.int64)
    strips = []
    strip_z = []
    for b in np.unique(bins):
        in_strip = (bins == b)[None, :]
        strips.append(np.where(in_strip, slide, 1.0))
        strip_z.append(centre + b * bin_um)
    depth = np.broadcast_to(depth_x[None, :], shape).copy()
    options = {"angle_deg": math.degrees(math.atan(slope)), "z_centre_um": centre, "bin_um": float(bin_um),
               "depth_range_um": [float(depth_x.min()), float(depth_x.max())]}
    return np.stack(strips), np.asarray(strip_z), slide[None], np.array([centre]), options, depth


def _json_safe(value: Any) -> Any:
    """Option values as plain JSON types (tuples and arrays become lists, numpy scalars numbers)."""
    if isinstance(value, (tuple, list, np.ndarray)):
        return [_json_safe(v) for v in np.asarray(value).tolist()] if isinstance(value, np.ndarray) \
            else [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _add_noise(intensity: np.ndarray, seed: int, noise: float, photons: float | None) -> np.ndarray:
    noise_rng = np.random.default_rng([int(seed), 1])
    if photons is not None:
        intensity = noise_rng.poisson(np.clip(intensity, 0, None) * photons) / photons
    if noise > 0:
        intensity = intensity + noise * noise_rng.standard_normal(intensity.shape)
    return np.clip(intensity, 0.0, None).astype(np.float32)


def _simulate_slide(size, seed, noise, photons, optics, leds, dev, options) -> Simulation:
    from .optics.slide import simulate_slide

    try:
        intensity, band, depth, optics, leds, used = simulate_slide(size, seed, optics, leds, dev, **options)
    except TypeError as exc:  # unknown option name
        raise FPMInputError(f"bad option for preset 'slide': {exc}") from None
    except ValueError as exc:
        raise FPMInputError(f"cannot simulate the slide: {exc}") from None
    meta = {"format": "simulated", "preset": "slide", "seed": int(seed), "size": size, "noise": float(noise),
            "photons": None if photons is None else float(photons),
            **{k: _json_safe(v) for k, v in options.items()}, **used}
    z_centre = float(used["z_centre_um"])
    truth = Truth(amplitude=np.abs(band)[None].astype(np.float32), phase=np.angle(band)[None].astype(np.float32),
                  z_um=np.array([z_centre]), depth_um=depth.astype(np.float32), dx_hr_um=optics.dx_hr_um, meta=meta)
    raw = RawData(intensities=_add_noise(intensity, seed, noise, photons), optics=optics, source=None, z_um=None,
                  meta=dict(meta), leds=leds)
    return Simulation(raw=raw, truth=truth)


def simulate(preset: str = "layers", size: int = 64, seed: int = 0, noise: float = 0.0,
             optics: Optics | None = None, *, photons: float | None = None, device: str = "auto",
             leds: LEDArray | None = None, **preset_options: Any) -> Simulation:
    """Simulate a raw FPM dataset and its ground truth (deterministic for a given ``seed``).

    Args:
        preset: ``"layers"`` (sparse cell layers at ``z_um``, default −12, 0, +12 µm),
            ``"tilted"`` (one layer of stained, absorption-dominant cells, ``phase_max_rad``
            default 0.15, on a slide tilted along x: ``depth_range_um`` default (−4, +4) across
            the field, or ``angle_deg`` with ``z_centre_um``; ``bin_um`` strip depth quantization), ``"single"`` (one layer at ``z_um``, default 0),
            ``"slide"`` (a whole-slide field: one layer on a tilted, curved slide, ``tilt_um_per_mm``,
            ``curvature_um_per_mm2``, ``z_centre_um``, ``margin_px``; exact spherical-wave
            illumination per pixel from ``leds``; see :mod:`~napari_fpminr.optics.slide`; default
            optics :func:`~napari_fpminr.optics.slide.slide_optics`).
        size: raw image side in pixels (the hr grid is ``size·upsample``).
        seed: random seed for the sample and the noise.
        noise: std of additive Gaussian noise, in units of the bright-field background.
        optics: microscope; default :func:`paper_optics` (``slide``: :func:`slide_optics`).
        leds: LED board geometry; needed by ``slide`` with explicit optics (default: the
            :func:`paper_leds` board for the default optics).
        photons: if given, Poisson shot noise with this many photons at the background level.
        device: torch device for the image formation.
        preset_options: per-preset options above, plus cell options of
            :func:`~napari_fpminr.optics.samples.cell_layer` (``cells_per_100um2``, ``radius_um``, ...).
    """
    if preset not in PRESETS:
        raise FPMInputError(f"unknown simulation preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if int(size) != size or size < 8:
        raise FPMInputError(f"size must be an integer >= 8 raw pixels, got {size!r}")
    if not (noise >= 0 and math.isfinite(noise)) or (photons is not None and not photons > 0):
        raise FPMInputError("noise must be >= 0 and photons > 0")
    size = int(size)
    if preset == "slide":
        return _simulate_slide(size, seed, noise, photons, optics, leds, resolve_device(device), preset_options)
    leds = (paper_leds() if optics is None else None) if leds is None else leds
    optics = paper_optics() if optics is None else optics
    dev = resolve_device(device)
    try:
        fwd = FPMForward(optics, (size, size), dev)
    except ValueError as exc:  # LED windows outside the hr spectrum, pupil shape, ...
        raise FPMInputError(f"cannot simulate with these optics: {exc}") from None
    shape = fwd.hr_shape
    dx = optics.dx_hr_um
    rng = np.random.default_rng([int(seed), 0])
    try:
        if preset == "layers":
            result = _layers_sample(shape, dx, rng, **preset_options)
        elif preset == "single":
            result = _single_sample(shape, dx, rng, **preset_options)
        else:
            result = _tilted_sample(shape, dx, rng, **preset_options)
    except TypeError as exc:  # unknown option name
        raise FPMInputError(f"bad option for preset {preset!r}: {exc}") from None
    sim_layers, sim_z, truth_layers, truth_z, options = result[:5]

    with torch.no_grad():
        intensity = multislice_intensities(torch.as_tensor(sim_layers), sim_z, fwd).cpu().numpy()
    intensity = _add_noise(intensity, seed, noise, photons)

    cutoff = optics.na_synthetic / optics.wavelength_um
    band = band_limit(truth_layers, dx, cutoff)
    if preset == "tilted":
        depth = np.where(structure_mask(truth_layers[0]), result[5], np.nan)
    else:
        dev_from_1 = np.abs(truth_layers - 1.0)
        strongest = dev_from_1.argmax(axis=0)
        depth = np.where(dev_from_1.max(axis=0) > 0.02, truth_z[strongest], np.nan)
    meta = {"format": "simulated", "preset": preset, "seed": int(seed), "size": size, "noise": float(noise),
            "photons": None if photons is None else float(photons),
            **{k: _json_safe(v) for k, v in preset_options.items()}, **options}
    truth = Truth(amplitude=np.abs(band).astype(np.float32), phase=np.angle(band).astype(np.float32),
                  z_um=np.asarray(truth_z, dtype=np.float64), depth_um=depth.astype(np.float32),
                  dx_hr_um=dx, meta=meta)
    raw = RawData(intensities=intensity, optics=optics, source=None,
                  z_um=float(truth_z[0]) if preset == "single" else None, meta=dict(meta), leds=leds)
    return Simulation(raw=raw, truth=truth)
