"""``LEDArray``: where the LEDs physically are, so illumination NAs can be recomputed.

Illumination NAs (``Optics.na_illum``) are what the forward model needs, but they depend on
where in the field one looks and on the board's placement. Calibration (fitting a shift, a
rotation and a height) and tiling (each tile sees every LED under its own angle) both need the
geometry itself. Coordinates and sign follow :mod:`napari_fpminr.optics.geometry`: ``x`` along
image columns, ``y`` along rows, millimetres in the sample plane, ``(na_x, na_y) = -NA·(cos φ, sin φ)``.

A field point ``(x_f, y_f)`` mm away from the optical axis sees an LED at board position
``p`` as if the LED sat at ``p - (x_f, y_f)`` for the centre of the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from . import orientation as board_orientation
from .geometry import illumination_na, led_positions_mm, raster_offsets, spiral_offsets

__all__ = ["LEDArray", "led_grid_na"]


@dataclass(frozen=True, eq=False)
class LEDArray:
    """A planar LED board below the sample, in acquisition order.

    Attributes:
        offsets: ``(N, 2)`` LED ``(dx, dy)`` grid offsets in pitches, acquisition order.
        pitch_mm: LED spacing on the board.
        distance_mm: board to the sample plane (to the slab's bottom face with a slab).
        centre_mm: ``(x, y)`` position of the ``(0, 0)`` LED relative to the optical axis.
        rotation_deg: board rotation about the optical axis (counter-clockwise).
        slab_thickness_mm, slab_index: glass slab carrying the sample (0 = none).
        orientation: how the board's own coordinates sit on the camera (one of the 8 turns and
            mirrors of :mod:`napari_fpminr.optics.orientation`; 0 = as stated), applied to the
            board coordinates before ``rotation_deg``.
    """

    offsets: np.ndarray
    pitch_mm: float
    distance_mm: float
    centre_mm: tuple[float, float] = (0.0, 0.0)
    rotation_deg: float = 0.0
    slab_thickness_mm: float = 0.0
    slab_index: float = 1.0
    orientation: int = 0

    def __post_init__(self) -> None:
        off = np.asarray(self.offsets, dtype=np.float64)
        if off.ndim != 2 or off.shape[1] != 2 or off.shape[0] == 0 or not np.all(np.isfinite(off)):
            raise ValueError(f"LED offsets must be a finite (N, 2) array with N >= 1, got shape {off.shape}")
        object.__setattr__(self, "offsets", off)
        for name in ("pitch_mm", "distance_mm", "rotation_deg", "slab_thickness_mm", "slab_index"):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                raise ValueError(f"LED array {name} must be finite, got {value}")
            object.__setattr__(self, name, value)
        if self.pitch_mm <= 0 or self.distance_mm <= 0:
            raise ValueError(f"LED pitch and distance must be positive, got {self.pitch_mm} and {self.distance_mm} mm")
        if self.slab_thickness_mm < 0 or self.slab_index < 1.0:
            raise ValueError(f"slab needs thickness >= 0 and index >= 1, got {self.slab_thickness_mm} mm, "
                             f"n={self.slab_index}")
        centre = tuple(float(v) for v in np.asarray(self.centre_mm, dtype=np.float64).reshape(-1))
        if len(centre) != 2 or not all(math.isfinite(v) for v in centre):
            raise ValueError(f"LED array centre_mm must be two finite numbers, got {self.centre_mm!r}")
        object.__setattr__(self, "centre_mm", centre)
        object.__setattr__(self, "orientation", board_orientation._check(self.orientation))

    @classmethod
    def grid(cls, grid_size, pitch_mm: float, distance_mm: float, *, order: str = "raster",
             **geometry: Any) -> "LEDArray":
        """A full regular grid: ``k`` (``k × k``) or ``(n_rows, n_cols)``; order ``raster`` or ``spiral``."""
        if np.ndim(grid_size) == 0:
            n_rows = n_cols = int(grid_size)
        else:
            n_rows, n_cols = (int(v) for v in grid_size)
        if n_rows < 1 or n_cols < 1:
            raise ValueError(f"grid size must be >= 1, got {n_rows}x{n_cols}")
        if order == "spiral":
            if n_rows != n_cols:
                raise ValueError(f"a spiral order needs a square grid, got {n_rows}x{n_cols}")
            offsets = spiral_offsets(n_rows * n_cols)
        elif order == "raster":
            offsets = raster_offsets(n_rows, n_cols)
        else:
            raise ValueError(f"LED order must be 'raster' or 'spiral', got {order!r}")
        return cls(offsets=offsets, pitch_mm=pitch_mm, distance_mm=distance_mm, **geometry)

    @property
    def n_leds(self) -> int:
        return int(self.offsets.shape[0])

    def positions_mm(self) -> np.ndarray:
        """``(N, 2)`` LED ``(x, y)`` positions relative to the optical axis (mm)."""
        return led_positions_mm(self.offsets, self.pitch_mm, self.centre_mm, self.rotation_deg,
                                board_orientation.matrix(self.orientation) if self.orientation else None)

    def na_at(self, field_mm=(0.0, 0.0)) -> np.ndarray:
        """``(N, 2)`` illumination NA seen from the field point ``(x, y)`` mm off the optical axis."""
        point = np.asarray(field_mm, dtype=np.float64).reshape(1, 2)
        return illumination_na(self.positions_mm() - point, self.distance_mm, self.slab_thickness_mm,
                               self.slab_index)

    def select(self, indices) -> "LEDArray":
        """The LEDs ``indices`` (same geometry), e.g. after sorting by NA."""
        return replace(self, offsets=self.offsets[np.asarray(indices)])

    def replace(self, **changes: Any) -> "LEDArray":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description (round-trips through :meth:`from_dict`)."""
        out = {"offsets": self.offsets.tolist(), "pitch_mm": self.pitch_mm, "distance_mm": self.distance_mm,
               "centre_mm": list(self.centre_mm), "rotation_deg": self.rotation_deg,
               "slab_thickness_mm": self.slab_thickness_mm, "slab_index": self.slab_index}
        if self.orientation:
            out["orientation"] = self.orientation
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LEDArray":
        """Inverse of :meth:`to_dict`; raises ``ValueError`` (one line) on a malformed description."""
        if not isinstance(data, dict):
            raise ValueError("LED array description must be an object")
        missing = [k for k in ("offsets", "pitch_mm", "distance_mm") if k not in data]
        if missing:
            raise ValueError(f"LED array description lacks '{missing[0]}'")
        known = {"offsets", "pitch_mm", "distance_mm", "centre_mm", "rotation_deg", "slab_thickness_mm",
                 "slab_index", "orientation"}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid LED array description: {' '.join(str(exc).split())}") from None


def led_grid_na(grid_size, pitch_mm: float, distance_mm: float, *, centre_mm=(0.0, 0.0),
                order: str = "raster", rotation_deg: float = 0.0, slab_thickness_mm: float = 0.0,
                slab_index: float = 1.0) -> np.ndarray:
    """Illumination NA of a regular LED grid, in acquisition order.

    Args:
        grid_size: ``k`` for a ``k × k`` grid or ``(n_rows, n_cols)`` (raster only).
        pitch_mm: LED spacing.
        distance_mm: LED plane to the sample plane (to the slab's bottom face with a slab).
        centre_mm: ``(x, y)`` offset of the reference LED from the patch centre: the first LED
            of a spiral, the grid centre of a raster.
        order: ``"raster"`` (row by row, y outer) or ``"spiral"`` (out from the centre LED).
        rotation_deg: rotation of the board relative to the camera (counter-clockwise).
        slab_thickness_mm, slab_index: glass slab under the sample (0 = none).
    """
    return LEDArray.grid(grid_size, pitch_mm, distance_mm, order=order, centre_mm=centre_mm,
                         rotation_deg=rotation_deg, slab_thickness_mm=slab_thickness_mm,
                         slab_index=slab_index).na_at()
