"""Tile grid over a raw frame, each tile's place in the field, and the blending weights.

A whole FPM frame is cut into overlapping square tiles of ``tile`` raw pixels whose neighbours
share ``overlap`` raw pixels (the last tile of a row or column is moved back so that it ends on
the frame's edge; it then overlaps its neighbour more). Each tile is reconstructed on its own,
with the illumination NAs seen from its centre (:mod:`napari_fpminr.tiles.local_na`), and the
tiles are blended back on the hr grid.

Coordinates: ``x`` along image columns, ``y`` along rows (DESIGN.md, geometry). A tile's centre
in the sample plane, relative to the optical axis at the frame's centre, is

    centre_mm = (pixel offset of the tile centre from the frame centre) · pixel_um / mag / 1000

Blending: along each axis a tile weighs 1 in its interior and falls with a raised cosine
(``cos²``) across the part of the overlap it shares with a neighbour, leaving a margin of a
quarter of the overlap at its very edge at weight 0 (reconstructions are least reliable there:
the FFT wraps around). Weights are divided by their sum over all tiles, per axis, so the
separable 2D weights ``w_row(y) · w_col(x)`` add up to exactly 1 at every hr pixel, and a tile's
weight can be computed without the rest of the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import FPMInputError

__all__ = ["Tile", "TileLayout", "axis_starts"]

MIN_TILE = 16


def axis_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along an axis of ``n`` pixels (the last tile ends at ``n``)."""
    if n <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, n - tile, step))
    if starts[-1] + tile < n:
        starts.append(n - tile)
    return starts


@dataclass(frozen=True)
class Tile:
    """One tile: grid index ``(row, col)`` and its raw-pixel window ``(top, left, height, width)``."""

    row: int
    col: int
    top: int
    left: int
    height: int
    width: int

    @property
    def name(self) -> str:
        return f"tile_{self.row:03d}_{self.col:03d}"

    @property
    def window(self) -> tuple[int, int, int, int]:
        return (self.top, self.left, self.height, self.width)


@dataclass(frozen=True)
class TileLayout:
    """Overlapping tiles of ``tile`` raw pixels sharing ``overlap`` pixels over a ``frame_shape`` frame.

    Attributes:
        frame_shape: raw frame ``(H, W)`` in pixels.
        tile: tile side in raw pixels (a frame smaller than that is one tile of its own size).
        overlap: raw pixels shared by neighbouring tiles (0 <= overlap <= tile / 2).
        upsample: hr pixels per raw pixel (the blending weights live on the hr grid).
        dx_lr_um: object-side raw pixel, ``pixel_um / mag``.
    """

    frame_shape: tuple[int, int]
    tile: int
    overlap: int
    upsample: int
    dx_lr_um: float

    def __post_init__(self) -> None:
        H, W = (int(v) for v in self.frame_shape)
        object.__setattr__(self, "frame_shape", (H, W))
        if int(self.tile) != self.tile or self.tile < MIN_TILE:
            raise FPMInputError(f"--tile must be an integer >= {MIN_TILE} raw pixels, got {self.tile}")
        if int(self.overlap) != self.overlap or not 0 <= self.overlap <= self.tile // 2:
            raise FPMInputError(f"--overlap must be an integer from 0 to half the tile ({self.tile // 2}), "
                                f"got {self.overlap}")
        if self.upsample < 1 or not self.dx_lr_um > 0:
            raise ValueError("upsample must be >= 1 and dx_lr_um > 0")

    # ---- the grid --------------------------------------------------------------------------
    @cached_property
    def row_starts(self) -> list[int]:
        return axis_starts(self.frame_shape[0], self.tile, self.overlap)

    @cached_property
    def col_starts(self) -> list[int]:
        return axis_starts(self.frame_shape[1], self.tile, self.overlap)

    @property
    def tile_shape(self) -> tuple[int, int]:
        """Raw size of every tile (all tiles have the same size)."""
        return (min(self.tile, self.frame_shape[0]), min(self.tile, self.frame_shape[1]))

    @property
    def grid_shape(self) -> tuple[int, int]:
        return (len(self.row_starts), len(self.col_starts))

    @property
    def n_tiles(self) -> int:
        return self.grid_shape[0] * self.grid_shape[1]

    @property
    def hr_shape(self) -> tuple[int, int]:
        return (self.frame_shape[0] * self.upsample, self.frame_shape[1] * self.upsample)

    def tiles(self) -> list[Tile]:
        """All tiles in raster order (row by row)."""
        h, w = self.tile_shape
        return [Tile(r, c, top, left, h, w) for r, top in enumerate(self.row_starts)
                for c, left in enumerate(self.col_starts)]

    def tile_at(self, row: int, col: int) -> Tile:
        h, w = self.tile_shape
        return Tile(row, col, self.row_starts[row], self.col_starts[col], h, w)

    def centre_mm(self, tile: Tile) -> tuple[float, float]:
        """``(x, y)`` of the tile's centre relative to the optical axis (frame centre), mm."""
        H, W = self.frame_shape
        dx_px = tile.left + tile.width / 2.0 - W / 2.0
        dy_px = tile.top + tile.height / 2.0 - H / 2.0
        scale = self.dx_lr_um / 1000.0
        return (dx_px * scale, dy_px * scale)

    # ---- blending --------------------------------------------------------------------------
    def _axis_weights(self, starts: list[int], length: int) -> np.ndarray:
        """``(n_tiles_axis, length·upsample)`` raw ramps (before normalisation), hr grid."""
        up = self.upsample
        n_hr = length * up
        size = min(self.tile, length) * up
        x = np.arange(n_hr, dtype=np.float64) + 0.5
        out = np.zeros((len(starts), n_hr))
        for k, s in enumerate(starts):
            a, b = s * up, s * up + size
            w = ((x >= a) & (x < b)).astype(np.float64)
            if k > 0:  # rising across the overlap with the previous tile
                w *= _ramp(x, a, min(b, starts[k - 1] * up + size))
            if k + 1 < len(starts):  # falling across the overlap with the next tile
                w *= 1.0 - _ramp(x, starts[k + 1] * up, b)
            out[k] = w
        return out

    @cached_property
    def _row_weights(self) -> np.ndarray:
        w = self._axis_weights(self.row_starts, self.frame_shape[0])
        return w / w.sum(axis=0, keepdims=True)

    @cached_property
    def _col_weights(self) -> np.ndarray:
        w = self._axis_weights(self.col_starts, self.frame_shape[1])
        return w / w.sum(axis=0, keepdims=True)

    def axis_weights(self, tile: Tile) -> tuple[np.ndarray, np.ndarray]:
        """The two float64 factors ``(w_row, w_col)`` of :meth:`weight` over the tile's hr window."""
        up = self.upsample
        r0, c0 = tile.top * up, tile.left * up
        return (self._row_weights[tile.row, r0:r0 + tile.height * up],
                self._col_weights[tile.col, c0:c0 + tile.width * up])

    def weight(self, tile: Tile) -> np.ndarray:
        """Normalised blending weight of ``tile`` over its own hr window, float32 ``(h·up, w·up)``."""
        wr, wc = self.axis_weights(tile)
        return np.outer(wr, wc).astype(np.float32)

    def hr_window(self, tile: Tile) -> tuple[int, int, int, int]:
        up = self.upsample
        return (tile.top * up, tile.left * up, tile.height * up, tile.width * up)

    def tiles_touching(self, top: int, left: int, height: int, width: int) -> list[Tile]:
        """Tiles whose hr window meets the hr region ``(top, left, height, width)``."""
        up = self.upsample
        th, tw = self.tile_shape
        rows = [r for r, s in enumerate(self.row_starts) if s * up < top + height and (s + th) * up > top]
        cols = [c for c, s in enumerate(self.col_starts) if s * up < left + width and (s + tw) * up > left]
        return [self.tile_at(r, c) for r in rows for c in cols]

    def seam_lines_hr(self) -> tuple[list[float], list[float]]:
        """hr positions of the seams (centres of the overlaps) along rows and along columns."""
        up = self.upsample
        th, tw = self.tile_shape

        def seams(starts, size):
            return [0.5 * ((starts[k + 1]) + (starts[k] + size)) * up for k in range(len(starts) - 1)]

        return seams(self.row_starts, th), seams(self.col_starts, tw)

    def to_dict(self) -> dict:
        return {"frame_shape": list(self.frame_shape), "tile": int(self.tile), "overlap": int(self.overlap),
                "upsample": int(self.upsample), "dx_lr_um": float(self.dx_lr_um),
                "blend": "raised-cosine ramps across the overlap, quarter-overlap margin, normalised per axis"}

    @classmethod
    def from_dict(cls, data: dict) -> "TileLayout":
        return cls(tuple(int(v) for v in data["frame_shape"]), int(data["tile"]), int(data["overlap"]),
                   int(data["upsample"]), float(data["dx_lr_um"]))


def _ramp(x: np.ndarray, a: float, b: float) -> np.ndarray:
    """0 below ``a + m``, 1 above ``b - m`` (``m`` a quarter of ``b - a``), ``sin²`` in between."""
    span = b - a
    if span <= 0:
        return np.ones_like(x)
    m = span / 4.0
    t = np.clip((x - (a + m)) / max(span - 2 * m, 1e-9), 0.0, 1.0)
    return np.sin(0.5 * np.pi * t) ** 2
