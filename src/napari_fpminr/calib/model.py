"""``Calibration``: the fitted illumination model and how it corrects raw data.

The calibrated measurement model of LED ``i`` is

    I_meas,i = b_i · I_i(na_i) + background

with ``I_i(na_i)`` the forward model (shared/DESIGN.md §1) at the calibrated illumination NA
``na_i``, ``b_i`` the LED's relative brightness (mean 1 over the bright-field LEDs, so the object's
scale is unchanged) and ``background`` a level common to all frames (camera offset, stray light;
raw intensity units of the file). :meth:`Calibration.apply` inverts it: it returns data whose
intensities are ``(I_meas - background)/b_i`` (clipped at 0) and whose ``optics.na_illum`` are the
calibrated NAs, so every reconstruction method uses the calibration without knowing about it.

The NAs come from one of two geometric models, fitted to the data:

* ``"board"`` (the raw data carry an :class:`~napari_fpminr.optics.led_array.LEDArray`): the nominal
  board re-oriented by ``orientation`` (one of the 8 turns/mirrors of
  :mod:`napari_fpminr.optics.orientation`, composed with the board's own), moved by ``shift_mm`` (in
  the camera frame), rotated by ``rotation_deg`` and with its distance scaled by ``height_scale``;
  NAs by :meth:`LEDArray.na_at` (refraction in the slab included).
* ``"similarity"`` (NAs only): ``na = height_scale⁻¹ · R(rotation_deg) · T · na_nominal + shift_na``
  (``T`` the orientation's matrix; a small-angle similarity transform of the nominal NAs).

Optionally ``na_illum`` holds per-LED NAs that replace the model's (per-LED refinement).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import FPMInputError
from ..optics import orientation as board_orientation
from ..optics.led_array import LEDArray
from ..rawdata import RawData

__all__ = ["Calibration", "CALIBRATION_VERSION"]

CALIBRATION_VERSION = 1
KINDS = ("board", "similarity")


def _floats(values, n: int, name: str) -> tuple[float, ...]:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size != n or not np.all(np.isfinite(arr)):
        raise ValueError(f"calibration '{name}' must be {n} finite numbers")
    return tuple(float(v) for v in arr)


@dataclass(frozen=True, eq=False)
class Calibration:
    """A fitted illumination model (see the module docstring).

    Attributes:
        kind: ``"board"`` or ``"similarity"``.
        n_leds: number of LEDs (acquisition order of the data it was fitted on).
        shift_mm: board model: displacement ``(x, y)`` of the board from its nominal placement.
        shift_na: similarity model: added ``(na_x, na_y)``.
        rotation_deg: extra board rotation (counter-clockwise), both models.
        height_scale: fitted distance / nominal distance (board), or the inverse NA scale (similarity).
        brightness: ``(N,)`` relative LED brightness ``b_i`` (mean 1 over bright-field LEDs).
        background: common background level, raw intensity units of the file.
        na_illum: optional ``(N, 2)`` per-LED NAs replacing the geometric model's.
        fallback: True when the fit did not lower the misfit and the nominal model was kept.
        report: JSON-safe figures of the fit (misfits before/after, spreads, messages).
        orientation: the board's orientation found relative to the stated one (0 = as stated).
    """

    kind: str
    n_leds: int
    shift_mm: tuple[float, float] = (0.0, 0.0)
    shift_na: tuple[float, float] = (0.0, 0.0)
    rotation_deg: float = 0.0
    height_scale: float = 1.0
    brightness: np.ndarray | None = None
    background: float = 0.0
    na_illum: np.ndarray | None = None
    fallback: bool = False
    report: dict[str, Any] = field(default_factory=dict)
    orientation: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"calibration kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        n = int(self.n_leds)
        if n < 1:
            raise ValueError(f"calibration n_leds must be >= 1, got {self.n_leds}")
        object.__setattr__(self, "n_leds", n)
        object.__setattr__(self, "orientation", board_orientation._check(self.orientation))
        object.__setattr__(self, "shift_mm", _floats(self.shift_mm, 2, "shift_mm"))
        object.__setattr__(self, "shift_na", _floats(self.shift_na, 2, "shift_na"))
        for name in ("rotation_deg", "height_scale", "background"):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                raise ValueError(f"calibration '{name}' must be finite")
            object.__setattr__(self, name, value)
        if not self.height_scale > 0:
            raise ValueError("calibration 'height_scale' must be positive")
        b = np.ones(n) if self.brightness is None else np.asarray(self.brightness, dtype=np.float64).reshape(-1)
        if b.size != n or not np.all(np.isfinite(b)) or not np.all(b > 0):
            raise ValueError(f"calibration 'brightness' must be {n} positive finite numbers")
        object.__setattr__(self, "brightness", b)
        if self.na_illum is not None:
            na = np.asarray(self.na_illum, dtype=np.float64)
            if na.shape != (n, 2) or not np.all(np.isfinite(na)):
                raise ValueError(f"calibration 'na_illum' must be a finite ({n}, 2) array")
            object.__setattr__(self, "na_illum", na)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def identity(cls, raw: RawData, **changes: Any) -> "Calibration":
        """The nominal model of ``raw`` (nothing changed)."""
        kind = "board" if raw.leds is not None else "similarity"
        return cls(kind=kind, n_leds=raw.n_leds, **changes)

    def replace(self, **changes: Any) -> "Calibration":
        return replace(self, **changes)

    # ---- geometry -----------------------------------------------------------------------
    def board(self, nominal: LEDArray) -> LEDArray:
        """The calibrated board: nominal board re-oriented, moved, rotated and at the scaled distance."""
        cx, cy = nominal.centre_mm
        orient = board_orientation.compose(self.orientation, nominal.orientation)
        # shift_mm moves the whole board in the sample frame; LEDArray orients and rotates its centre
        # with the board, so express the displacement in the board's own coordinates: T⁻¹·R(-rot)·shift
        rot = math.radians(nominal.rotation_deg + self.rotation_deg)
        dx, dy = self.shift_mm
        ux = math.cos(rot) * dx + math.sin(rot) * dy
        uy = -math.sin(rot) * dx + math.cos(rot) * dy
        bx, by = board_orientation.matrix(orient).T @ np.array([ux, uy])
        return nominal.replace(centre_mm=(cx + float(bx), cy + float(by)), orientation=orient,
                               rotation_deg=nominal.rotation_deg + self.rotation_deg,
                               distance_mm=nominal.distance_mm * self.height_scale)

    def na(self, raw: RawData) -> np.ndarray:
        """``(N, 2)`` calibrated illumination NAs for ``raw`` (its LED order)."""
        self._check(raw)
        if self.na_illum is not None:
            return self.na_illum.copy()
        if self.kind == "board":
            if raw.leds is None:
                raise FPMInputError("this calibration is a board model but the data carry no LED board "
                                    "geometry", raw.source)
            return self.board(raw.leds).na_at()
        return similarity_na(raw.optics.na_illum, self.shift_na, self.rotation_deg, self.height_scale,
                             self.orientation)

    def _check(self, raw: RawData) -> None:
        if raw.n_leds != self.n_leds:
            raise FPMInputError(f"calibration is for {self.n_leds} LEDs, the data have {raw.n_leds}", raw.source)

    def apply(self, raw: RawData) -> RawData:
        """Data with calibrated NAs (and board), brightness-divided, background-subtracted intensities."""
        self._check(raw)
        na = self.na(raw)
        leds = self.board(raw.leds) if (self.kind == "board" and raw.leds is not None) else raw.leds
        b = self.brightness.astype(np.float32)[:, None, None]
        intens = np.clip((raw.intensities - np.float32(self.background)) / b, 0.0, None)
        optics = raw.optics.replace(na_illum=na)
        if optics.required_upsample() > raw.optics.upsample:  # keep the user's grid unless it no longer fits
            optics = optics.replace(upsample=optics.required_upsample())
        meta = dict(raw.meta, calibration=self.summary())
        return replace(raw, intensities=intens.astype(np.float32), optics=optics, leds=leds, meta=meta)

    # ---- reporting / serialisation ------------------------------------------------------
    def brightness_spread(self) -> float:
        """Standard deviation of the brightness factors (relative)."""
        return float(np.std(self.brightness))

    def summary(self) -> dict[str, Any]:
        """Compact JSON-safe description (what model files record)."""
        out = {"kind": self.kind, "orientation": self.orientation,
               "orientation_name": board_orientation.describe(self.orientation),
               "shift_mm": list(self.shift_mm), "shift_na": list(self.shift_na),
               "rotation_deg": self.rotation_deg, "height_scale": self.height_scale,
               "brightness_spread": self.brightness_spread(), "background": self.background,
               "per_led_na": self.na_illum is not None, "fallback": self.fallback}
        for key in ("misfit_before", "misfit_after", "source", "orientation_verdict"):
            if key in self.report:
                out[key] = self.report[key]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"version": CALIBRATION_VERSION, "kind": self.kind, "n_leds": self.n_leds,
                "shift_mm": list(self.shift_mm), "shift_na": list(self.shift_na), "rotation_deg": self.rotation_deg,
                "height_scale": self.height_scale, "brightness": self.brightness.tolist(),
                "background": self.background,
                "na_illum": None if self.na_illum is None else self.na_illum.tolist(),
                "fallback": self.fallback, "report": self.report, "orientation": self.orientation}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Calibration":
        """Inverse of :meth:`to_dict`; ``ValueError`` (one line) on malformed content."""
        if not isinstance(data, dict):
            raise ValueError("calibration must be a JSON object")
        version = data.get("version")
        if version != CALIBRATION_VERSION:
            raise ValueError(f"unsupported calibration version {version!r} (this program reads "
                             f"version {CALIBRATION_VERSION})")
        for key in ("kind", "n_leds"):
            if key not in data:
                raise ValueError(f"calibration lacks '{key}'")
        known = {"kind", "n_leds", "shift_mm", "shift_na", "rotation_deg", "height_scale", "brightness",
                 "background", "na_illum", "fallback", "report", "orientation"}
        kwargs = {k: v for k, v in data.items() if k in known}
        if not isinstance(kwargs.get("report", {}), dict):
            raise ValueError("calibration 'report' must be an object")
        kwargs["fallback"] = bool(kwargs.get("fallback", False))
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ValueError(" ".join(str(exc).split())) from None


def similarity_na(na_nominal: np.ndarray, shift_na, rotation_deg: float, height_scale: float,
                  orientation: int = 0) -> np.ndarray:
    """``na = R(rotation)·T·na_nominal / height_scale + shift_na`` (small-angle board model; ``T`` the
    orientation's matrix: the NA vector is minus the LED's direction, so it turns with the board)."""
    t = math.radians(rotation_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]) @ board_orientation.matrix(orientation)
    return np.asarray(na_nominal, dtype=np.float64) @ rot.T / height_scale + np.asarray(shift_na)[None]
