"""Scores of LED-board hypotheses from the raw frames alone (used by :mod:`.board_search`).

* spectral: the drop of each bright-field frame's ring-whitened log spectrum across the circles a
  hypothesis predicts (:meth:`BoardScorer.scores`);
* brightness: measured bright/dark frames against the hypothesis' prediction of which LEDs pass the
  pupil (:func:`measured_brightness`).

The physics and the measured reasons for each detail are in :mod:`.board_search`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..optics import orientation as board_orientation
from ..optics.geometry import led_positions_mm
from ..rawdata import RawData

__all__ = ["BRIGHTNESS_WEIGHT", "BoardScorer", "measured_brightness"]

#: weight of the brightness score (per LED, in [0, 1] squared units) against the spectral one
#: (edge maps normalised to unit standard deviation)
BRIGHTNESS_WEIGHT = 2.0


def measured_brightness(raw: RawData) -> tuple[np.ndarray, np.ndarray]:
    """``(relative mean (N,), measured bright (N,) bool)`` of every frame.

    The bright-field level is the median mean of the ``n`` brightest frames, ``n`` the number of
    LEDs the stated geometry puts in the bright field (the count barely depends on the board's
    orientation); a frame is bright above half of that level.
    """
    means = raw.intensities.reshape(raw.n_leds, -1).astype(np.float64).mean(1)
    n_bf = max(1, int(raw.optics.bright_field.sum()))
    level = float(np.median(np.sort(means)[-n_bf:]))
    rel = means / max(level, 1e-30)
    return rel, rel > 0.5


def _log_spectra(images: np.ndarray) -> torch.Tensor:
    """``log|F{(I - mean)·hann}|`` minus its mean over each ring about the origin, centred, ``(M, h, w)``.

    Every sample's spectrum falls off steeply with frequency; left in, that fall-off pulls every
    circle edge outwards (the ring just inside a circle's near-origin side sits further out than the
    ring outside it), measured as a 5–10 % bias of the board height. Subtracting the radial profile
    leaves the circles' edges.
    """
    imgs = torch.as_tensor(images, dtype=torch.float64)
    h, w = imgs.shape[-2:]
    win = torch.outer(torch.hann_window(h, periodic=False, dtype=torch.float64),
                      torch.hann_window(w, periodic=False, dtype=torch.float64))
    imgs = (imgs - imgs.mean(dim=(-2, -1), keepdim=True)) * win
    spec = torch.fft.fftshift(torch.fft.fft2(imgs), dim=(-2, -1)).abs()
    floor = spec.flatten(1).median(dim=1).values[:, None, None] * 1e-3 + 1e-20
    logs = torch.log(spec + floor)
    fy = (torch.arange(h, dtype=torch.float64) - h // 2)[:, None] / h
    fx = (torch.arange(w, dtype=torch.float64) - w // 2)[None, :] / w
    ring = torch.round(torch.sqrt(fy**2 + fx**2) * max(h, w)).long().reshape(-1)
    n_rings = int(ring.max()) + 1
    counts = torch.bincount(ring, minlength=n_rings).clamp_min(1).to(torch.float64)
    flat = logs.reshape(logs.shape[0], -1)
    profile = torch.zeros((logs.shape[0], n_rings), dtype=torch.float64).index_add_(1, ring, flat) / counts
    return (flat - profile[:, ring]).reshape(logs.shape)


def _blurred(maps: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Gaussian blur (circular, in the Fourier domain) of ``(M, h, w)`` maps."""
    if sigma_px <= 0:
        return maps
    h, w = maps.shape[-2:]
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(w, dtype=torch.float64)[None, :]
    g = torch.exp(-2.0 * math.pi**2 * sigma_px**2 * (fy**2 + fx**2))
    return torch.fft.ifft2(torch.fft.fft2(maps) * g).real


#: points per circle at which the edge is probed
N_ARC = 32


class BoardScorer:
    """Scores many hypotheses of one orientation at once (see the module docstring)."""

    def __init__(self, raw: RawData, crop: RawData, circle_leds: np.ndarray, brightness: np.ndarray):
        o = raw.optics
        self.raw = raw
        self.lam = o.wavelength_um
        self.na_obj = o.na_obj
        h, w = crop.lr_shape
        self.df = (1.0 / (h * o.dx_lr_um), 1.0 / (w * o.dx_lr_um))  # (y, x) cycles/µm per bin
        self.shape = (h, w)
        self.bin_na = self.lam * max(self.df)
        self.radius_px = 0.5 * (o.na_obj / self.lam / self.df[0] + o.na_obj / self.lam / self.df[1])
        self.logs = _log_spectra(crop.intensities[circle_leds]) if circle_leds.size else None
        # the spectral score's unit: the spread of log-spectrum differences one bin apart
        self.noise = 1.0 if self.logs is None else float((self.logs[..., 1:] - self.logs[..., :-1]).std()) + 1e-12
        self.circle_leds = circle_leds
        self.level_maps = {}
        angles = np.linspace(0.0, 2.0 * math.pi, N_ARC, endpoint=False)
        self.unit = torch.as_tensor(np.stack([np.cos(angles), np.sin(angles)], axis=1), dtype=torch.float32)
        self.measured = np.clip(brightness, 0.0, 1.0)
        leds = raw.leds
        # board coordinates (before the orientation and the rotation) of every LED
        self.board_xy = None if leds is None else led_positions_mm(leds.offsets, leds.pitch_mm, leds.centre_mm)

    def na(self, orient: int, params: np.ndarray) -> np.ndarray:
        """``(K, N, 2)`` illumination NAs of ``K`` hypotheses ``params (K, 4)``."""
        sx, sy, rot, logh = (params[:, j] for j in range(4))
        t = np.deg2rad(rot)
        cos, sin = np.cos(t)[:, None], np.sin(t)[:, None]
        if self.board_xy is not None:
            leds = self.raw.leds
            m = board_orientation.matrix(board_orientation.compose(orient, leds.orientation))
            xy = self.board_xy @ m.T  # (N, 2) camera axes before the rotation
            t = t + math.radians(leds.rotation_deg)
            cos, sin = np.cos(t)[:, None], np.sin(t)[:, None]
            px = cos * xy[None, :, 0] - sin * xy[None, :, 1] + sx[:, None]
            py = sin * xy[None, :, 0] + cos * xy[None, :, 1] + sy[:, None]
            dist = leds.distance_mm * np.exp(logh)[:, None]
            pos = np.stack([px, py], axis=-1)
            return _board_na(pos, np.broadcast_to(dist, px.shape), leds.slab_thickness_mm, leds.slab_index)
        nominal = self.raw.optics.na_illum @ board_orientation.matrix(orient).T  # (N, 2)
        nx = (cos * nominal[None, :, 0] - sin * nominal[None, :, 1]) / np.exp(logh)[:, None] + sx[:, None]
        ny = (sin * nominal[None, :, 0] + cos * nominal[None, :, 1]) / np.exp(logh)[:, None] + sy[:, None]
        return np.stack([nx, ny], axis=-1)

    def _maps_at(self, sigma_px: float) -> torch.Tensor:
        key = round(float(sigma_px), 3)
        if key not in self.level_maps:
            self.level_maps[key] = _blurred(self.logs, sigma_px).to(torch.float32)
        return self.level_maps[key]

    def _sample(self, maps: torch.Tensor, x_px: torch.Tensor, y_px: torch.Tensor) -> torch.Tensor:
        """Bilinear samples of ``maps (M, h, w)`` at ``(M, K, P)`` bin offsets from the spectrum centre."""
        h, w = self.shape
        m, k, p = x_px.shape
        grid = torch.stack([2.0 * (x_px + w // 2) / (w - 1) - 1.0, 2.0 * (y_px + h // 2) / (h - 1) - 1.0], dim=-1)
        out = torch.nn.functional.grid_sample(maps[:, None], grid.reshape(m, k * p, 1, 2), mode="bilinear",
                                              padding_mode="border", align_corners=True)
        return out.reshape(m, k, p)

    def scores(self, orient: int, params: np.ndarray, sigma_px: float) -> tuple[np.ndarray, np.ndarray]:
        """``(spectral (K,), brightness (K,))`` of hypotheses ``params (K, 4)``.

        Spectral: the mean drop of the (blurred) log spectrum across each predicted circle, probed
        at :data:`N_ARC` points just inside and just outside it. A probe counts only where a drop is
        expected: not inside or near the twin disk at ``-c`` (no edge there) and not near the
        radius-``2R`` edge of the scattered light's own autocorrelation (an edge of every strongly
        scattering sample that is no circle of this LED, and would pull the circles outwards).
        """
        na = self.na(orient, params)
        k_abs = np.hypot(na[..., 0], na[..., 1])
        # the zero order passes the hard pupil edge or not: a step, softened over a tenth of a bin
        predicted = 1.0 / (1.0 + np.exp(np.clip(-(self.na_obj - k_abs) / (0.1 * self.bin_na), -50.0, 50.0)))
        bright = -np.mean((predicted - self.measured[None]) ** 2, axis=1)
        if self.logs is None:
            return np.zeros(len(params)), bright
        sel = torch.as_tensor(na[:, self.circle_leds], dtype=torch.float32)  # (K, M, 2)
        cx = (sel[..., 0] / (self.lam * self.df[1])).T[..., None]  # (M, K, 1) bins
        cy = (sel[..., 1] / (self.lam * self.df[0])).T[..., None]
        r = self.radius_px
        probe = max(1.0, sigma_px)
        margin = probe + 1.0
        ux, uy = self.unit[:, 0], self.unit[:, 1]  # (P,)
        xin, yin = cx + (r - probe) * ux, cy + (r - probe) * uy
        xout, yout = cx + (r + probe) * ux, cy + (r + probe) * uy
        weight = ((torch.hypot(xin + cx, yin + cy) > r + margin) & (torch.hypot(xout + cx, yout + cy) > r + margin)
                  & (torch.hypot(xout, yout) < 2.0 * r - margin)).to(torch.float32)
        maps = self._maps_at(sigma_px)
        drop = self._sample(maps, xin, yin) - self._sample(maps, xout, yout)  # (M, K, P)
        n = weight.sum(-1)
        per_led = (drop * weight).sum(-1) / n.clamp_min(1.0)  # (M, K)
        used = (n >= 4).to(torch.float32)
        spectral = (per_led * used).sum(0) / used.sum(0).clamp_min(1.0)
        return spectral.double().numpy() / self.noise, bright

    def combined(self, orient: int, params: np.ndarray, sigma_px: float) -> np.ndarray:
        spectral, bright = self.scores(orient, params, sigma_px)
        return spectral + BRIGHTNESS_WEIGHT * bright


def _board_na(pos: np.ndarray, dist: np.ndarray, slab_mm: float, slab_index: float) -> np.ndarray:
    """``illumination_na`` for ``(K, N, 2)`` positions with per-hypothesis distances ``(K, N)``.

    With a slab the ray equation ``D·tan θa + t·tan θg = l`` (:mod:`napari_fpminr.optics.geometry`)
    is solved for ``s = sin θa`` by Newton's method (``f'(s) = D/cos³θa + (t/n)/cos³θg > 0``,
    convex: six steps from the slab-free guess reach 1e-12), many hypotheses at once.
    """
    lat = np.hypot(pos[..., 0], pos[..., 1])
    if slab_mm == 0:
        na_abs = lat / np.hypot(lat, dist)
    else:
        t, n = float(slab_mm), float(slab_index)
        s = lat / np.hypot(lat, dist + t)
        for _ in range(8):
            c = np.sqrt(1.0 - s * s)
            sg = s / n
            cg = np.sqrt(1.0 - sg * sg)
            f = dist * s / c + t * sg / cg - lat
            df = dist / c**3 + (t / n) / cg**3
            s = np.clip(s - f / df, 0.0, 0.999999)
        na_abs = s
    phi = np.arctan2(pos[..., 1], pos[..., 0])
    return np.stack([-na_abs * np.cos(phi), -na_abs * np.sin(phi)], axis=-1)
