"""The LED board as the user describes it: a CSV of positions or a grid shortcut (:mod:`.frames`).

Board coordinates (millimetres, shared/DESIGN.md §1): ``x`` along image columns, ``y`` along image
rows, the origin on the board right below the sample centre (the optical axis); a CSV gives one
``x_mm,y_mm`` row per frame in frame order.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FPMInputError
from ..optics.geometry import raster_offsets, spiral_offsets
from ..optics.led_array import LEDArray
from ._common import check_readable, one_line

__all__ = ["LED_ORDERS", "BoardSpec", "grid_offsets", "parse_grid", "positive", "read_led_csv"]

LED_ORDERS = ("raster", "serpentine", "column", "column-serpentine", "spiral")


# ---- the board -------------------------------------------------------------------------------
def grid_offsets(n_rows: int, n_cols: int, order: str = "raster") -> np.ndarray:
    """``(N, 2)`` LED ``(dx, dy)`` offsets in pitches from the grid's centre, in acquisition order.

    ``raster``: row by row (``y`` outer, ``x`` inner, both increasing); ``serpentine``: row by row,
    every other row right to left (boustrophedon); ``column`` / ``column-serpentine``: the same
    column by column; ``spiral``: a square spiral out from the centre LED (legs ``+x, +y, -x,
    -y`` of lengths 1, 1, 2, 2, ...; :func:`~napari_fpminr.optics.geometry.spiral_offsets`),
    square grids only (for an even side the walk starts at the LED left of and above the centre).
    """
    if n_rows < 1 or n_cols < 1:
        raise ValueError(f"grid size must be >= 1, got {n_rows}x{n_cols}")
    if order == "spiral":
        if n_rows != n_cols:
            raise ValueError(f"a spiral order needs a square grid, got {n_rows}x{n_cols}")
        off = spiral_offsets(n_rows * n_cols).astype(np.float64)
        return off - (off.min(axis=0) + off.max(axis=0)) / 2
    if order not in LED_ORDERS:
        raise ValueError(f"LED order must be one of {', '.join(LED_ORDERS)}, got {order!r}")
    by_column = order.startswith("column")
    outer, inner = (n_cols, n_rows) if by_column else (n_rows, n_cols)
    grid = raster_offsets(outer, inner).reshape(outer, inner, 2)  # (outer, inner, (inner pos, outer pos))
    if order.endswith("serpentine"):
        grid[1::2] = grid[1::2, ::-1]
    off = grid.reshape(-1, 2)
    return off[:, ::-1].copy() if by_column else off


def parse_grid(text: str) -> tuple[int, int]:
    """``"8x8"`` / ``"15X15"`` / ``"8"`` -> ``(rows, cols)``."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX×]\s*(\d+))?\s*", str(text))
    if not match:
        raise FPMInputError(f"cannot read the LED grid {text!r} (write ROWSxCOLS, e.g. 8x8)")
    rows = int(match.group(1))
    cols = int(match.group(2) or rows)
    if not (1 <= rows <= 1024 and 1 <= cols <= 1024):
        raise FPMInputError(f"LED grid {rows}x{cols}: each side must be 1..1024 LEDs")
    return rows, cols


def read_led_csv(path: str | Path) -> np.ndarray:
    """``(N, 2)`` LED ``(x_mm, y_mm)`` from a CSV with a header naming the columns ``x_mm`` and
    ``y_mm`` (other columns are ignored; blank lines and lines starting with ``#`` skipped)."""
    path = check_readable(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise FPMInputError(f"cannot read the LED positions: {one_line(exc)}", path) from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    rows = list(csv.reader(lines))
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if "x_mm" not in header or "y_mm" not in header:
        raise FPMInputError(f"the first line must name the columns x_mm,y_mm (got {','.join(header) or 'nothing'})",
                            path)
    ix, iy = header.index("x_mm"), header.index("y_mm")
    positions = []
    for number, row in enumerate(rows[1:], start=2):
        try:
            x, y = float(row[ix]), float(row[iy])
        except (IndexError, ValueError):
            raise FPMInputError(f"row {number} ({','.join(row)}): x_mm and y_mm must be numbers", path) from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise FPMInputError(f"row {number}: x_mm and y_mm must be finite numbers, got {x}, {y}", path)
        positions.append((x, y))
    if not positions:
        raise FPMInputError("no LED positions below the header x_mm,y_mm", path)
    return np.asarray(positions, dtype=np.float64)


def positive(name: str, value, where=None) -> float:
    """``value`` as a float; a clear error naming ``name`` when it is missing, not a number, not finite or not > 0."""
    if value is None:
        raise FPMInputError(f"missing {name}", where)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(float(value)) or float(value) <= 0:
        raise FPMInputError(f"{name} must be a positive finite number, got {value!r}", where)
    return float(value)


@dataclass(frozen=True)
class BoardSpec:
    """The LED board as the user describes it, before the frames are counted.

    Either ``csv_path`` (one ``x_mm,y_mm`` row per frame, board coordinates relative to the
    point below the sample centre) or ``grid`` ``(rows, cols)`` with ``pitch_mm`` and ``order``
    (:func:`grid_offsets`). ``centre_mm``: where the CSV's origin / the grid's centre lies
    relative to the optical axis (mm). ``distance_mm``: board to the sample plane (to the bottom
    face of the slide when a slab is given: ``slab_thickness_mm``, ``slab_index``).
    """

    distance_mm: float | None
    csv_path: Path | None = None
    grid: tuple[int, int] | None = None
    pitch_mm: float | None = None
    order: str = "raster"
    centre_mm: tuple[float, float] = (0.0, 0.0)
    slab_thickness_mm: float = 0.0
    slab_index: float = 1.52

    def leds(self, n_frames: int, frames: str) -> LEDArray:
        """The board as an :class:`LEDArray` of ``n_frames`` LEDs in frame order."""
        if (self.csv_path is None) == (self.grid is None):
            raise FPMInputError("describe the LED board once: LED positions from a CSV (--led-positions) or a grid "
                                "(--led-grid ROWSxCOLS --led-pitch-mm P)", frames)
        where = self.csv_path
        distance = positive("the LED distance (--led-distance-mm, board to sample in mm)", self.distance_mm, where)
        centre = tuple(float(v) for v in self.centre_mm)
        if len(centre) != 2 or not all(math.isfinite(v) for v in centre):
            raise FPMInputError(f"--led-centre-mm must be two finite numbers, got {self.centre_mm!r}", where)
        if self.csv_path is not None:
            positions = read_led_csv(self.csv_path)
            if len(positions) != n_frames:
                raise FPMInputError(f"{len(positions)} LED positions but {n_frames} frames in {frames}: the CSV needs one "
                                    "x_mm,y_mm row per frame, in frame order", self.csv_path)
            offsets, pitch = positions, 1.0
        else:
            rows, cols = self.grid
            pitch = positive("the LED pitch (--led-pitch-mm)", self.pitch_mm, frames)
            if rows * cols != n_frames:
                raise FPMInputError(f"an LED grid of {rows}x{cols} = {rows * cols} LEDs but {n_frames} frames: one "
                                    "frame per LED", frames)
            try:
                offsets = grid_offsets(rows, cols, self.order)
            except ValueError as exc:
                raise FPMInputError(one_line(exc), frames) from None
        try:
            return LEDArray(offsets=offsets, pitch_mm=pitch, distance_mm=distance, centre_mm=centre,
                            slab_thickness_mm=float(self.slab_thickness_mm), slab_index=float(self.slab_index))
        except ValueError as exc:
            raise FPMInputError(f"invalid LED board: {one_line(exc)}", where or frames) from None
