"""Import a folder of camera frames (one per LED) plus a board description as a native data set.

A lab's own FPM rig leaves a folder of frames (PNG or TIFF, 8/16-bit integers or floats, one
image per LED, or multi-page TIFFs whose pages are the frames) and a description of its LED
board. :func:`import_frames` turns both into the native layout (:mod:`.native`): an ``N×H×W``
TIFF stack holding the frames' raw values in their own data type, and a JSON sidecar with the
optics, the board (``led_array``, explicit LED positions) and the illumination NAs computed from
it (``na_x``/``na_y``), the camera's saturation level, the dark background and the provenance
(``"acquisition": "measured"``, ``"import"``).

Frames are taken in natural order of their file names (``image2`` before ``image10``), pages of
a multi-page TIFF in page order. They are checked first (readable, one shape, one data type;
only their headers are read), then decoded one at a time and streamed page by page into the
output, so memory holds one frame at a time whatever the acquisition's size. Both files (and a
dark frame, ``<stem>.dark.tif``) are written atomically: a failure leaves nothing behind.

Board coordinates (millimetres, shared/DESIGN.md §1): ``x`` along image columns, ``y`` along
image rows, the origin on the board right below the sample centre (the optical axis); a CSV
gives one ``x_mm,y_mm`` row per frame in frame order. Colour frames are refused unless their
channels are equal (a monochrome image saved as RGB): FPM needs one wavelength per frame, and a
luminance mix of a colour camera's channels is not an intensity at one wavelength.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import FPMInputError, MissingParameterError
from ..optics.led_array import LEDArray
from ._common import MAX_WAVELENGTH_UM
from .atomic import atomic_write
from .budget import check_memory, check_output
from .board_spec import LED_ORDERS, BoardSpec, grid_offsets, parse_grid, positive, read_led_csv
from .frame_files import (FRAME_DTYPES, FRAME_SUFFIXES, FrameFile, frame_files, frames_label, iter_frames,
                          looks_like_frames_folder, natural_key, probe_frame_file, probe_frames)

__all__ = ["BoardSpec", "FRAME_DTYPES", "FRAME_SUFFIXES", "FrameFile", "FrameStats", "ImportResult", "LED_ORDERS",
           "OPTICS_HELP", "check_optics", "frame_files", "frames_label", "grid_offsets", "import_frames",
           "iter_frames", "looks_like_frames_folder", "natural_key", "parse_grid", "probe_frame_file",
           "probe_frames", "read_dark_frame", "read_led_csv", "saturation_for"]

OPTICS_HELP = {
    "wavelength_um": ("illumination wavelength in µm, e.g. 0.532", "--wavelength-um"),
    "na_obj": ("objective NA, e.g. 0.1", "--na-obj"),
    "mag": ("total magnification, e.g. 3", "--mag"),
    "pixel_um": ("camera pixel in µm, e.g. 3.45", "--pixel-um"),
}


# ---- optics, saturation and dark -------------------------------------------------------------
def check_optics(optics: dict, frames: str) -> dict[str, float]:
    """``wavelength_um``, ``na_obj``, ``mag``, ``pixel_um``: present, finite, in range."""
    out = {}
    for key, (what, option) in OPTICS_HELP.items():
        value = optics.get(key)
        if value is None:
            raise MissingParameterError(f"{key} ({what})", f"the frames do not say it: pass {option}", frames)
        out[key] = positive(f"{option} ({what})", value, frames)
    if out["wavelength_um"] >= MAX_WAVELENGTH_UM:
        raise FPMInputError(f"--wavelength-um {out['wavelength_um']:g} is not in µm (visible light is 0.4-0.8)", frames)
    if out["na_obj"] >= 1:
        raise FPMInputError(f"--na-obj {out['na_obj']:g} must be below 1", frames)
    return out


def saturation_for(dtype: np.dtype, level: float | str | None, frames: str) -> float | None:
    """The camera's saturation level in stored units: ``"auto"`` -> the integer type's maximum
    (none for float frames); ``None`` -> no saturation; a number -> checked against the type."""
    if level == "auto":
        return float(np.iinfo(dtype).max) if dtype.kind == "u" else None
    if level is None:
        return None
    value = positive("--saturation (the camera's saturation level)", level, frames)
    if dtype.kind == "u" and value > np.iinfo(dtype).max:
        raise FPMInputError(f"--saturation {value:g} is above the largest {dtype} value {np.iinfo(dtype).max}", frames)
    return value


def read_dark_frame(path: str | Path, like: FrameFile) -> np.ndarray:
    """The dark frame (one frame, the frames' size and data type) from ``path``."""
    info = probe_frame_file(Path(path))
    if info.pages != 1:
        raise FPMInputError(f"the dark frame file holds {info.pages} frames; give one (average them first)", info.path)
    if info.shape != like.shape or info.dtype != like.dtype:
        raise FPMInputError(f"dark frame is {info.shape[0]}x{info.shape[1]} {info.dtype} but the frames are "
                            f"{like.shape[0]}x{like.shape[1]} {like.dtype}", info.path)
    return next(iter_frames([info]))[1]


# ---- the import ------------------------------------------------------------------------------
@dataclass
class FrameStats:
    """Per-frame numbers gathered while streaming: mean raw value and saturated-pixel share."""

    mean: list[float] = field(default_factory=list)
    saturated: list[float] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    maximum: float = 0.0

    def add(self, frame: np.ndarray, level: float | None, name: str = "") -> None:
        self.names.append(name)
        self.mean.append(float(frame.mean(dtype=np.float64)))
        self.saturated.append(0.0 if level is None else float(np.count_nonzero(frame >= level)) / frame.size)
        self.maximum = max(self.maximum, float(frame.max()))


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_frames` wrote and measured (for the summary the user reads)."""

    out: Path
    sidecar: Path
    dark_path: Path | None
    files: list[Path]
    n_frames: int
    shape: tuple[int, int]
    dtype: np.dtype
    saturation_level: float | None
    dark_level: float | None
    leds: LEDArray
    na_obj: float
    stats: FrameStats

    @property
    def na_illum(self) -> np.ndarray:
        return self.leds.na_at()

    @property
    def bright_field(self) -> np.ndarray:
        return np.hypot(*self.na_illum.T) < self.na_obj

    def brightest(self) -> np.ndarray:
        """Indices of the brightest frames: as many as the board has bright-field LEDs (>= 1)."""
        n = max(int(self.bright_field.sum()), 1)
        return np.argsort(self.stats.mean)[::-1][:n]

    def summary(self) -> str:
        """One screen: frames, pixels, saturation, board, and the next commands."""
        h, w = self.shape
        na = np.hypot(*self.na_illum.T)
        lines = [f"frames      {self.n_frames} from {len(self.files)} file(s), {h} x {w} px, {self.dtype}"]
        if self.saturation_level is None:
            why = ("float frames" if np.dtype(self.dtype).kind == "f" else "--saturation none")
            lines.append(f"saturation  none marked ({why}; give --saturation LEVEL if the camera clipped)")
        else:
            top = self.brightest()
            share = float(np.mean(np.asarray(self.stats.saturated)[top]))
            worst = int(np.argmax(self.stats.saturated))
            lines.append(f"saturation  level {self.saturation_level:g}: {100 * share:.2f} % of the pixels saturated in "
                         f"the {len(top)} brightest frames (most: frame {worst + 1}, {self.stats.names[worst]}, "
                         f"{100 * self.stats.saturated[worst]:.2f} %)")
            hint = _bit_depth_hint(self.dtype, self.saturation_level, self.stats.maximum)
            if hint:
                lines.append(hint)
        if self.dark_path is not None:
            lines.append(f"dark        frame {self.dark_path.name} (mean {self.dark_level:.4g})")
        elif self.dark_level is not None:
            lines.append(f"dark        level {self.dark_level:g}")
        lines.append(f"board       {self.leds.n_leds} LEDs at {self.leds.distance_mm:g} mm, illumination NA "
                     f"{na.min():.3f}..{na.max():.3f}, {int(self.bright_field.sum())} bright-field (objective NA "
                     f"{self.na_obj:g})")
        lines.append(f"written     {self.out} + {self.sidecar.name}" + (f" + {self.dark_path.name}" if self.dark_path else ""))
        return "\n".join(lines)


def _bit_depth_hint(dtype: np.dtype, level: float, maximum: float) -> str | None:
    """A line when 16-bit frames top out at 2^k - 1 below the marked level (a 10/12/14-bit camera)."""
    for bits in (10, 12, 14):
        top = 2**bits - 1
        if dtype == np.uint16 and maximum == top and level > top:
            return (f"            the largest value is {top}: a {bits}-bit camera? Then it saturates at {top}: "
                    f"import again with --saturation {top}")
    return None


def _dark_level(value, saturation: float | None, frames: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise FPMInputError(f"--dark-level must be a finite number >= 0, got {value!r}", frames)
    if saturation is not None and value >= saturation:
        raise FPMInputError(f"--dark-level {value:g} is not below the saturation level {saturation:g}", frames)
    return float(value)


def import_frames(frames: str | Path | Sequence[str | Path], out: str | Path, board: BoardSpec, *,
                  wavelength_um: float | None = None, na_obj: float | None = None, mag: float | None = None,
                  pixel_um: float | None = None, saturation_level: float | str | None = "auto",
                  dark_level: float | None = None, dark_frame: str | Path | None = None) -> ImportResult:
    """Write the frames and the board as a native data set ``out`` (``.tif``) + ``<stem>.json``.

    Args:
        frames: a folder, a glob pattern, a file or a list of them (:func:`frame_files`).
        out: the TIFF to write; the sidecar goes beside it (and the dark frame, ``<stem>.dark.tif``).
        board: the LED board (:class:`BoardSpec`), one LED per frame in frame order.
        wavelength_um, na_obj, mag, pixel_um: the optics (required).
        saturation_level: camera value at which a pixel saturated (stored units); ``"auto"``: the
            integer type's maximum, none for float frames; ``None``: no saturation.
        dark_level: a constant dark background (stored units), or ``dark_frame``: a file holding
            one frame of the dark background. Neither is subtracted in the stored TIFF; the
            reader subtracts it.

    The raw values are stored unchanged, in the frames' own data type. Raises
    :class:`FPMInputError` (one line, naming the file) for anything wrong; nothing is left behind.
    """
    out = Path(out)
    label = frames_label(frames)
    if dark_level is not None and dark_frame is not None:
        raise FPMInputError("give a dark level or a dark frame, not both", label)
    optics = check_optics({"wavelength_um": wavelength_um, "na_obj": na_obj, "mag": mag, "pixel_um": pixel_um}, label)
    companions = [p for p in (board.csv_path, dark_frame) if p is not None]
    infos = probe_frames(frame_files(frames, ignore=companions))
    n_frames = sum(info.pages for info in infos)
    leds = board.leds(n_frames, label)
    first = infos[0]
    level = saturation_for(first.dtype, saturation_level, label)
    dark_level = _dark_level(dark_level, level, label)
    dark = None if dark_frame is None else read_dark_frame(dark_frame, first)
    h, w = first.shape
    check_memory(h * w * (first.dtype.itemsize + 9), f"decoding one {h}x{w} px frame", first.path)
    check_output(n_frames * h * w * first.dtype.itemsize, f"{n_frames} frames of {h}x{w} px", out)

    dark_path = out.with_name(out.stem + ".dark.tif") if dark is not None else None
    if dark is not None:
        dark_level = float(dark.mean(dtype=np.float64))
    meta = _sidecar(optics, leds, level, dark_level if dark is None else None, dark_path, label, n_frames, first)
    stats = FrameStats()
    _write_dataset(out, infos, meta, stats, level, dark, dark_path)
    return ImportResult(out=out, sidecar=out.with_suffix(".json"), dark_path=dark_path, files=[i.path for i in infos],
                        n_frames=n_frames, shape=first.shape, dtype=first.dtype, saturation_level=level,
                        dark_level=dark_level, leds=leds, na_obj=optics["na_obj"], stats=stats)


def _sidecar(optics: dict, leds: LEDArray, level: float | None, dark_level: float | None, dark_path: Path | None,
             label: str, n_frames: int, first: FrameFile) -> dict:
    """The sidecar (schema: :mod:`.native`, user guide "Your own rig")."""
    na = leds.na_at()
    meta = {"format": "napari-fpminr native raw data", "version": 1, "acquisition": "measured", **optics,
            "na_x": na[:, 0].tolist(), "na_y": na[:, 1].tolist(), "led_array": leds.to_dict()}
    if level is not None:
        meta["saturation_level"] = level
    if dark_level is not None:
        meta["dark_level"] = dark_level
    if dark_path is not None:
        meta["dark_frame"] = dark_path.name
    meta["import"] = {"frames": label, "count": n_frames, "first_file": str(first.path),
                      "dtype": first.dtype.name, "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return meta


def _write_dataset(out: Path, infos: list[FrameFile], meta: dict, stats: FrameStats, level: float | None,
                   dark: np.ndarray | None, dark_path: Path | None) -> None:
    """Stream the frames page by page into ``out``; sidecar and dark frame beside it; all atomic."""
    import json

    import tifffile

    side = out.with_suffix(".json")
    dark_target = atomic_write(dark_path) if dark_path is not None else contextlib.nullcontext()
    with atomic_write(side) as tmp_json, atomic_write(out) as tmp_tif, dark_target as tmp_dark:
        with tifffile.TiffWriter(tmp_tif, bigtiff=_needs_bigtiff(infos)) as tw:
            for path, frame in iter_frames(infos):
                stats.add(frame, level, path.name)
                tw.write(frame, photometric="minisblack", contiguous=True)
        if tmp_dark is not None:
            tifffile.imwrite(tmp_dark, dark, photometric="minisblack")
        tmp_json.write_text(json.dumps(meta, indent=1), encoding="utf-8")


def _needs_bigtiff(infos: Sequence[FrameFile]) -> bool:
    total = sum(i.pages * i.shape[0] * i.shape[1] * i.dtype.itemsize for i in infos)
    return total > (2**32 - 2**25)  # classic TIFF offsets are 32-bit; keep headroom for the tags
