"""``RawData``: the one in-memory form every raw-data reader produces.

``intensities`` are raw camera intensities, ``(N, h, w)`` float32, one image per LED in the
order of ``optics.na_illum``. They are kept in the file's units; :meth:`RawData.normalized`
divides by the mean bright-field background so that a transparent sample has intensity ≈ 1
(shared/DESIGN.md §1, "Scale").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FPMInputError
from .optics.led_array import LEDArray
from .optics.system import Optics

#: ``meta`` flag set by the real-data preparation when asked (``--correct-intensity``,
#: :mod:`calib.prepare`): the LEDs' brightness is an estimate the solvers refine with a residual
#: gain per LED (:mod:`recon.qnewton`, intensity correction)
CORRECT_INTENSITY_KEY = "correct_intensity"


@dataclass(frozen=True, eq=False)
class RawData:
    """Raw FPM measurement: intensities plus the optics that produced them.

    Attributes:
        intensities: ``(N, h, w)`` float32 intensities, one per LED, finite and >= 0.
        optics: the system; ``optics.n_leds == N``.
        source: file the data came from (``None`` for in-memory data).
        z_um: the sample defocus stated by the file, if any (µm, DESIGN.md sign).
        meta: free-form provenance (format name, original keys, ...), JSON-safe.
        leds: the LED board's geometry when the file gives it (UConn, native ``led_grid``,
            simulations), in the same order as the images; ``None`` when only NAs are known.
        valid: ``(N, h, w)`` bool, True where a pixel is a true intensity measurement; False
            where the camera saturated (the true intensity is unknown, only ``>=`` the stored
            value). Solvers leave such pixels out of the data term. ``None``: every pixel valid.
    """

    intensities: np.ndarray
    optics: Optics
    source: Path | None = None
    z_um: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    leds: LEDArray | None = None
    valid: np.ndarray | None = None

    def __post_init__(self) -> None:
        arr = np.asarray(self.intensities)
        where = self.source
        if arr.ndim != 3:
            raise FPMInputError(f"intensities must be a stack (N, h, w), got shape {arr.shape}", where)
        if min(arr.shape) == 0:
            raise FPMInputError(f"intensity stack is empty (shape {arr.shape})", where)
        if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise FPMInputError(f"intensities must be real numbers, got dtype {arr.dtype}", where)
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.all(np.isfinite(arr)):
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            raise FPMInputError(f"intensities contain {bad} NaN or infinite values", where)
        if arr.min() < 0:
            raise FPMInputError(f"intensities contain negative values (min {arr.min():g})", where)
        if arr.shape[0] != self.optics.n_leds:
            raise FPMInputError(
                f"{arr.shape[0]} images but {self.optics.n_leds} LED positions: they must match", where
            )
        if self.optics.pupil is not None and self.optics.pupil.shape != arr.shape[1:]:
            raise FPMInputError(
                f"pupil shape {self.optics.pupil.shape} does not match image shape {arr.shape[1:]}", where
            )
        if self.leds is not None and self.leds.n_leds != arr.shape[0]:
            raise FPMInputError(f"{arr.shape[0]} images but an LED array of {self.leds.n_leds} LEDs", where)
        object.__setattr__(self, "intensities", arr)
        if self.valid is not None:
            valid = np.asarray(self.valid)
            if valid.shape != arr.shape:
                raise FPMInputError(f"valid-pixel mask has shape {valid.shape}, the intensities {arr.shape}", where)
            valid = np.ascontiguousarray(valid, dtype=bool)
            object.__setattr__(self, "valid", None if valid.all() else valid)
        if self.source is not None:
            object.__setattr__(self, "source", Path(self.source))

    @property
    def n_leds(self) -> int:
        return int(self.intensities.shape[0])

    @property
    def lr_shape(self) -> tuple[int, int]:
        return (int(self.intensities.shape[1]), int(self.intensities.shape[2]))

    @property
    def hr_shape(self) -> tuple[int, int]:
        up = self.optics.upsample
        return (self.lr_shape[0] * up, self.lr_shape[1] * up)

    @property
    def is_simulated(self) -> bool:
        """True for data made by :func:`napari_fpminr.simulate.simulate` (in memory or read back from a
        file it wrote); everything else is a measurement and gets the real-data defaults."""
        return self.meta.get("format") == "simulated" or self.meta.get("simulated") is True

    @property
    def brightness_uncertain(self) -> bool:
        """True when the preparation flagged the LED brightness as an estimate the solvers refine."""
        return self.meta.get(CORRECT_INTENSITY_KEY) is True

    def saturated_fraction(self) -> float:
        """Share of the bright-field pixels marked saturated (0 without a mask)."""
        if self.valid is None:
            return 0.0
        bf = self.optics.bright_field
        v = self.valid[bf] if bf.any() else self.valid
        return float(1.0 - v.mean())

    def background_level(self) -> float:
        """Mean intensity over the bright-field images (the transparent-sample level)."""
        bf = self.optics.bright_field
        imgs = self.intensities[bf] if bf.any() else self.intensities[:1]
        level = float(imgs.mean())
        if not level > 0:
            raise FPMInputError("bright-field images are all zero: cannot normalise", self.source)
        return level

    def normalized(self) -> "RawData":
        """Copy with intensities divided by :meth:`background_level` (transparent sample ≈ 1)."""
        level = self.background_level()
        meta = dict(self.meta, intensity_scale=level * float(self.meta.get("intensity_scale", 1.0)))
        return replace(self, intensities=self.intensities / np.float32(level), meta=meta)

    def sorted_by_na(self) -> "RawData":
        """Copy with LEDs ordered by illumination NA, bright field first."""
        order = self.optics.led_order_by_na()
        return self.select_leds(order)

    def select_leds(self, indices) -> "RawData":
        idx = np.asarray(indices)
        leds = None if self.leds is None else self.leds.select(idx)
        valid = None if self.valid is None else self.valid[idx]
        return replace(self, intensities=self.intensities[idx], optics=self.optics.select_leds(idx), leds=leds,
                       valid=valid)

    def crop(self, top: int, left: int, height: int, width: int) -> "RawData":
        """Spatial crop of every image (pupil must be re-sampled by the caller if present).

        The region must lie inside the images: negative offsets (which numpy would wrap around)
        and regions reaching past the edge (which it would clamp) are refused.
        """
        h, w = self.lr_shape
        top, left, height, width = (int(v) for v in (top, left, height, width))
        if top < 0 or left < 0 or height < 1 or width < 1 or top + height > h or left + width > w:
            raise FPMInputError(f"crop (top {top}, left {left}, {height}x{width} px) is not inside the "
                                f"{h}x{w} px images", self.source)
        if self.optics.pupil is not None and (height, width) != self.lr_shape:
            raise FPMInputError("cannot crop data that carries a calibrated pupil", self.source)
        sub = self.intensities[:, top:top + height, left:left + width]
        valid = None if self.valid is None else self.valid[:, top:top + height, left:left + width]
        return replace(self, intensities=sub, valid=valid)

    def with_optics(self, **changes: Any) -> "RawData":
        return replace(self, optics=self.optics.replace(**changes))

    def content_hash(self) -> str:
        """sha256 of the intensities and the optics (identifies the training data of a model)."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.intensities).tobytes())
        if self.valid is not None:
            h.update(np.packbits(self.valid).tobytes())
        h.update(repr(sorted(self.optics.to_dict().items())).encode())
        return h.hexdigest()
