"""The 8 ways an LED board can sit relative to the camera: turns by 90° and mirrors (the group D4).

A user describes the board in their own coordinates (a CSV of LED positions, a grid and an
order). Which way those coordinates run on the camera — x and y swapped, one of them flipped, or
the whole board turned by 90° — is the classic mistake of a home-built rig. An orientation is an
integer 2×2 matrix ``T`` (``det T = ±1``) applied to the board coordinates before the board's own
rotation (:meth:`napari_fpminr.optics.led_array.LEDArray.positions_mm`)::

    p_camera = R(rotation_deg) · T · (centre_mm + offsets · pitch_mm)

with ``x`` along image columns and ``y`` along image rows (shared/DESIGN.md).

Twin images. Turning the board by 180° (``T → −T``) maps every illumination NA to its negative.
The data then equal those of the complex-conjugate object at the mirrored depth (``o → o*``,
``z → −z``, pupil ``P(k) → P*(−k)``), exactly, for any thin sample: the forward model cannot tell
``T`` from ``−T`` except through the sign of a known sample depth (a sample stated to lie at
``z ≠ 0``), multiple scattering between layers, or the prior that the stated board is right. The
search (:mod:`napari_fpminr.calib.board_search`) therefore finds the pair ``{T, −T}`` from the
data and says when the pair's two members cannot be told apart.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ORIENTATIONS", "N_ORIENTATIONS", "compose", "describe", "inverse", "matrix", "twin"]

#: the 8 orientations: (matrix rows, a name for messages). Index 0 is the board as stated.
ORIENTATIONS: tuple[tuple[tuple[tuple[int, int], tuple[int, int]], str], ...] = (
    (((1, 0), (0, 1)), "as stated"),
    (((0, -1), (1, 0)), "turned 90°"),
    (((-1, 0), (0, -1)), "turned 180°"),
    (((0, 1), (-1, 0)), "turned 270° (90° the other way)"),
    (((-1, 0), (0, 1)), "mirrored left-right (x flipped)"),
    (((1, 0), (0, -1)), "mirrored up-down (y flipped)"),
    (((0, 1), (1, 0)), "with x and y swapped (transposed)"),
    (((0, -1), (-1, 0)), "with x and y swapped and both flipped"),
)
N_ORIENTATIONS = len(ORIENTATIONS)
_MATRICES = np.array([m for m, _ in ORIENTATIONS], dtype=np.float64)  # (8, 2, 2)


def _check(code) -> int:
    if isinstance(code, bool) or int(code) != code or not 0 <= int(code) < N_ORIENTATIONS:
        raise ValueError(f"board orientation must be an integer 0..{N_ORIENTATIONS - 1}, got {code!r}")
    return int(code)


def matrix(code: int) -> np.ndarray:
    """The ``2×2`` matrix ``T`` of orientation ``code`` (acts on ``(x, y)`` column vectors)."""
    return _MATRICES[_check(code)].copy()


def _code_of(mat: np.ndarray) -> int:
    hit = np.flatnonzero(np.all(np.abs(_MATRICES - np.round(mat)[None]) < 1e-9, axis=(1, 2)))
    if hit.size != 1:
        raise ValueError(f"not a board orientation: {mat.tolist()}")
    return int(hit[0])


def compose(outer: int, inner: int) -> int:
    """Orientation of ``T_outer · T_inner`` (``inner`` applied first)."""
    return _code_of(matrix(outer) @ matrix(inner))


def inverse(code: int) -> int:
    return _code_of(matrix(code).T)


def twin(code: int) -> int:
    """The 180°-turned orientation ``−T``: the data cannot tell it from ``T`` (module docstring)."""
    return compose(2, code)


def describe(code: int) -> str:
    """``"turned 90°"``, ``"as stated"``, ... for messages."""
    return ORIENTATIONS[_check(code)][1]
