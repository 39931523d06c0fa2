"""Where is the LED board, really? A global search over its orientation, placement, height.

What the data say without any reconstruction (Eckert, Phillips & Waller, Appl. Opt. 2018, for the
bright-field circles; here as a score of whole-board hypotheses rather than per-LED fits):

* **Bright-field circles.** Under a bright-field LED the raw intensity's spectrum fills two disks
  of the pupil's radius ``R = na_obj/λ`` centred at ``±na_i/λ`` (see :mod:`.brightfield`). Their
  edges are a drop of ``log|F{I_i}|`` across a circle. For each measured-bright frame the *edge
  map* ``C_i(c)`` — the mean of ``log|F{I_i}|`` in a thin ring just inside a circle of radius ``R``
  centred at ``c`` minus the mean in the ring just outside — is one circular convolution of the log
  spectrum with a two-ring kernel, computed once. A board hypothesis predicts every LED's ``na_i``;
  its spectral score is the mean of ``C_i`` at the predicted centres. The edge contrast is local,
  so it does not need a texture-rich sample: a sparse, line-like object (a USAF target, whose
  spectrum is lines through the origin) still shows the edge where its lines cross the circle,
  and contributes nothing (rather than a wrong pull) elsewhere.
* **Bright or dark.** A frame is bright when its LED's zero order passes the pupil
  (``|na_i| < na_obj``). Measured frame means, relative to the bright-field level, against the
  hypothesis' prediction (a step softened over one frequency bin) give the brightness score.

A hypothesis is the stated board re-oriented by one of the 8 turns/mirrors
(:mod:`napari_fpminr.optics.orientation`), moved by a shift (mm in the camera frame; NA for data
that give NAs only), rotated and at a scaled height — the parameters of
:class:`~napari_fpminr.calib.model.Calibration`. For each orientation a coarse grid over the whole
capture range on heavily smoothed edge maps, then shrinking pattern searches on sharper maps,
find the best placement. Both scores are exactly symmetric under ``na → −na`` (the spectra of real
images are), so an orientation and its 180°-turned twin always score alike: what the search
decides is the pair; see :mod:`napari_fpminr.optics.orientation` for why the data cannot do more
without a known sample depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..optics import orientation as board_orientation
from ..optics.geometry import led_positions_mm
from ..rawdata import RawData
from .model import Calibration

__all__ = ["BoardFit", "BoardSearch", "choose_twin", "measured_brightness", "search_board", "SEARCH_RANGE", "TWIN_MARGIN"]

#: the capture range searched: shift as a fraction of the board distance (0.03 = 2.7 mm at 90 mm),
#: rotation (deg), height (relative)
SEARCH_RANGE = {"shift_fraction": 0.03, "rotation_deg": 8.0, "height": 0.08}
#: smallest crop (raw px) of the spectra: the circles need a few bins of radius to be located
MIN_SPECTRUM_PX = 32
MAX_SPECTRUM_PX = 256
#: weight of the brightness score (per LED, in [0, 1] squared units) against the spectral one
#: (edge maps normalised to unit standard deviation)
BRIGHTNESS_WEIGHT = 2.0


@dataclass(frozen=True)
class BoardFit:
    """The best placement found for one orientation.

    Attributes:
        orientation: index into :data:`napari_fpminr.optics.orientation.ORIENTATIONS`, relative to
            the stated board.
        params: ``(shift_x, shift_y, rotation_deg, log height_scale)``; shift in mm (board model)
            or NA (similarity model).
        score: combined score (higher is better); ``spectral`` and ``brightness`` its parts.
    """

    orientation: int
    params: tuple[float, float, float, float]
    score: float
    spectral: float
    brightness: float

    def calibration(self, raw: RawData) -> Calibration:
        """This placement as a :class:`Calibration` (geometry only) of ``raw``."""
        sx, sy, rot, logh = self.params
        base = Calibration.identity(raw, orientation=self.orientation, rotation_deg=rot,
                                    height_scale=math.exp(logh))
        if base.kind == "board":
            return base.replace(shift_mm=(sx, sy))
        return base.replace(shift_na=(sx, sy))


@dataclass(frozen=True)
class BoardSearch:
    """All 8 orientations' best placements, best first, with what the verdict rests on.

    Attributes:
        fits: one :class:`BoardFit` per orientation, sorted by score (best first).
        stated: the fit of the stated orientation (index 0).
        bright_measured: ``(N,)`` bool, frames measured bright.
        brightness: ``(N,)`` frame means relative to the bright-field level.
        n_circle_leds: frames whose spectra were used.
        margin: score of the best pair minus the best other pair, relative to the best score's
            magnitude (how clearly the data pick the pair).
    """

    fits: tuple[BoardFit, ...]
    stated: BoardFit
    bright_measured: np.ndarray
    brightness: np.ndarray
    n_circle_leds: int
    margin: float

    @property
    def best(self) -> BoardFit:
        return self.fits[0]

    def fit_of(self, orientation: int) -> BoardFit:
        return next(f for f in self.fits if f.orientation == orientation)

    def pair(self) -> tuple[int, int]:
        """The best orientation and its 180° twin (which the data cannot tell apart)."""
        return self.best.orientation, board_orientation.twin(self.best.orientation)

    def stated_in_pair(self) -> bool:
        return 0 in self.pair()


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


def _spectrum_crop(raw: RawData) -> RawData:
    """A central square crop of at most :data:`MAX_SPECTRUM_PX` (the circles' radius grows with it)."""
    h, w = raw.lr_shape
    side = min(h, w, MAX_SPECTRUM_PX)
    if (h, w) == (side, side) or raw.optics.pupil is not None:
        return raw
    return raw.crop((h - side) // 2, (w - side) // 2, side, side)


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


class _Scorer:
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


def _ranges(raw: RawData, scorer: _Scorer, search_range: dict) -> np.ndarray:
    """Half-widths of the searched parameters ``(shift_x, shift_y, rotation_deg, log height)``."""
    if raw.leds is not None:
        shift = search_range["shift_fraction"] * raw.leds.distance_mm
    else:
        shift = search_range["shift_fraction"]  # in NA: the board's angle
    return np.array([shift, shift, search_range["rotation_deg"], math.log1p(search_range["height"])])


def _displacement_bins(raw: RawData, scorer: _Scorer, half: np.ndarray) -> float:
    """How far (frequency bins) the range's extremes move the outermost circle LED."""
    if scorer.circle_leds.size == 0:
        return 1.0
    base = scorer.na(0, np.zeros((1, 4)))[0]
    corners = np.array([[half[0], 0, 0, 0], [0, 0, half[2], 0], [0, 0, 0, half[3]]])
    moved = scorer.na(0, corners)
    d = np.abs(moved - base[None])[:, scorer.circle_leds].max() / scorer.bin_na
    return float(max(d, 1.0))


def _pattern_search(scorer: _Scorer, orient: int, start: np.ndarray, step: np.ndarray, sigma_px: float,
                    rounds: int = 4) -> tuple[np.ndarray, float]:
    """Best of a 3⁴ stencil around ``start``, recentred and halved ``rounds`` times."""
    offs = np.stack(np.meshgrid(*([np.array([-1.0, 0.0, 1.0])] * 4), indexing="ij"), axis=-1).reshape(-1, 4)
    cur = start.copy()
    best = float(scorer.combined(orient, cur[None], sigma_px)[0])
    for _ in range(rounds):
        cand = cur[None] + offs * step[None]
        s = scorer.combined(orient, cand, sigma_px)
        k = int(np.argmax(s))
        if s[k] > best:
            cur, best = cand[k], float(s[k])
        step = step * 0.5
    return cur, best


def search_board(raw: RawData, *, search_range: dict | None = None, orientations=None) -> BoardSearch:
    """Best placement of the board in each orientation (module docstring); ``raw`` in any units.

    Args:
        search_range: overrides of :data:`SEARCH_RANGE`.
        orientations: which of the 8 to try (default all).
    """
    rng = dict(SEARCH_RANGE, **(search_range or {}))
    brightness, bright = measured_brightness(raw)
    crop = _spectrum_crop(raw)
    o = raw.optics
    # frames whose circles can be located: measured bright, and not so near the axis that the two disks coincide
    na_abs = o.na_illum_abs
    circle = np.flatnonzero(bright & (na_abs > 0.1 * o.na_obj)) if min(crop.lr_shape) >= MIN_SPECTRUM_PX \
        else np.zeros(0, dtype=np.int64)
    scorer = _Scorer(raw, crop, circle, brightness)
    half = _ranges(raw, scorer, rng)
    spread = _displacement_bins(raw, scorer, half)
    coarse_sigma = max(1.0, spread / 3.0)
    n_grid = 5
    axes = [np.linspace(-h, h, n_grid) for h in half]
    coarse = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 4)
    codes = list(range(board_orientation.N_ORIENTATIONS) if orientations is None else orientations)
    coarse_scores = {o: scorer.combined(o, coarse, coarse_sigma) for o in codes}
    # refine the four best orientations by their coarse score (two twin pairs) and the stated one
    ranked = sorted(codes, key=lambda o: -float(coarse_scores[o].max()))
    refine = set(ranked[:4]) | ({0} & set(codes))
    fits = []
    for orient in codes:
        s = coarse_scores[orient]
        if orient not in refine:
            k = int(np.argmax(s))
            spectral, bright_s = scorer.scores(orient, coarse[k:k + 1], coarse_sigma)
            fits.append(BoardFit(int(orient), tuple(float(v) for v in coarse[k]), float(s[k]), float(spectral[0]),
                                 float(bright_s[0])))
            continue
        best_p, best_s = None, -np.inf
        for start in coarse[np.argsort(s)[-2:]]:
            p, sigma, step = start, coarse_sigma, half / (n_grid - 1)
            while True:
                p, sc = _pattern_search(scorer, orient, p, step, sigma, rounds=3)
                if sigma <= 0.5:
                    break
                sigma, step = max(0.5, sigma / 2.0), step / 2.0
            if sc > best_s:
                best_p, best_s = p, sc
        spectral, bright_s = scorer.scores(orient, best_p[None], 0.5)
        fits.append(BoardFit(int(orient), tuple(float(v) for v in best_p), float(best_s), float(spectral[0]),
                             float(bright_s[0])))
    fits.sort(key=lambda f: -f.score)
    stated = next((f for f in fits if f.orientation == 0), fits[0])
    pair = {fits[0].orientation, board_orientation.twin(fits[0].orientation)}
    others = [f.score for f in fits if f.orientation not in pair]
    margin = (fits[0].score - max(others)) / max(abs(fits[0].score), 1e-9) if others else 1.0
    return BoardSearch(tuple(fits), stated, bright, brightness, int(circle.size), float(margin))


#: a member of a twin pair must fit this much better (relative misfit) to be told apart from the other
TWIN_MARGIN = 0.15


def choose_twin(misfits: dict[int, float]) -> tuple[int, int, bool]:
    """``(chosen, other, told_apart)`` of a twin pair ``{orientation: misfit}``.

    The data of a thin sample fit both members alike (module docstring), so small misfit
    differences are placement and noise, not orientation (measured: 2–5 % either way on simulated
    rigs in focus and on the real UConn files). The stated orientation (0), when in the pair, is
    kept unless its twin fits :data:`TWIN_MARGIN` better; otherwise the better-fitting member is
    chosen, and the pair counts as told apart only beyond that margin.
    """
    (a, ma), (b, mb) = sorted(misfits.items(), key=lambda kv: kv[1])
    if 0 in misfits:
        other = a if b == 0 else b
        if misfits[other] < (1.0 - TWIN_MARGIN) * misfits[0]:
            return other, 0, True
        return 0, other, misfits[other] > misfits[0] / (1.0 - TWIN_MARGIN)
    return a, b, mb > ma / (1.0 - TWIN_MARGIN)
