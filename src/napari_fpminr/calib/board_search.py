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

from ..optics import orientation as board_orientation
from ..rawdata import RawData
from .board_score import BoardScorer, measured_brightness
from .model import Calibration

__all__ = ["BoardFit", "BoardSearch", "choose_twin", "measured_brightness", "search_board", "SEARCH_RANGE", "TWIN_MARGIN"]

#: the capture range searched: shift as a fraction of the board distance (0.03 = 2.7 mm at 90 mm),
#: rotation (deg), height (relative)
SEARCH_RANGE = {"shift_fraction": 0.03, "rotation_deg": 8.0, "height": 0.08}
#: smallest crop (raw px) of the spectra: the circles need a few bins of radius to be located
MIN_SPECTRUM_PX = 32
MAX_SPECTRUM_PX = 256


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


def _spectrum_crop(raw: RawData) -> RawData:
    """A central square crop of at most :data:`MAX_SPECTRUM_PX` (the circles' radius grows with it)."""
    h, w = raw.lr_shape
    side = min(h, w, MAX_SPECTRUM_PX)
    if (h, w) == (side, side) or raw.optics.pupil is not None:
        return raw
    return raw.crop((h - side) // 2, (w - side) // 2, side, side)


def _ranges(raw: RawData, search_range: dict) -> np.ndarray:
    """Half-widths of the searched parameters ``(shift_x, shift_y, rotation_deg, log height)``."""
    if raw.leds is not None:
        shift = search_range["shift_fraction"] * raw.leds.distance_mm
    else:
        shift = search_range["shift_fraction"]  # in NA: the board's angle
    return np.array([shift, shift, search_range["rotation_deg"], math.log1p(search_range["height"])])


def _displacement_bins(raw: RawData, scorer: BoardScorer, half: np.ndarray) -> float:
    """How far (frequency bins) the range's extremes move the outermost circle LED."""
    if scorer.circle_leds.size == 0:
        return 1.0
    base = scorer.na(0, np.zeros((1, 4)))[0]
    corners = np.array([[half[0], 0, 0, 0], [0, 0, half[2], 0], [0, 0, 0, half[3]]])
    moved = scorer.na(0, corners)
    d = np.abs(moved - base[None])[:, scorer.circle_leds].max() / scorer.bin_na
    return float(max(d, 1.0))


def _pattern_search(scorer: BoardScorer, orient: int, start: np.ndarray, step: np.ndarray, sigma_px: float,
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
    scorer = BoardScorer(raw, crop, circle, brightness)
    half = _ranges(raw, rng)
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
