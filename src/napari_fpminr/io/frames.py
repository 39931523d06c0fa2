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
import csv
import glob
import math
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import FPMInputError, MissingParameterError
from ..optics.geometry import raster_offsets, spiral_offsets
from ..optics.led_array import LEDArray
from ._common import MAX_WAVELENGTH_UM, check_readable, one_line
from .atomic import atomic_write
from .budget import check_memory, check_output
from .native import is_tiff

FRAME_SUFFIXES = (".png", ".tif", ".tiff")
FRAME_DTYPES = ("uint8", "uint16", "float16", "float32", "float64")
LED_ORDERS = ("raster", "serpentine", "column", "column-serpentine", "spiral")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG colour types (IHDR): grey, RGB, palette, grey + alpha, RGB + alpha
_PNG_GREY, _PNG_RGB, _PNG_PALETTE, _PNG_GREY_ALPHA, _PNG_RGBA = 0, 2, 3, 4, 6
OPTICS_HELP = {
    "wavelength_um": ("illumination wavelength in µm, e.g. 0.532", "--wavelength-um"),
    "na_obj": ("objective NA, e.g. 0.1", "--na-obj"),
    "mag": ("total magnification, e.g. 3", "--mag"),
    "pixel_um": ("camera pixel in µm, e.g. 3.45", "--pixel-um"),
}


# ---- which files -----------------------------------------------------------------------------
def natural_key(path: str | Path) -> tuple:
    """Sort key putting ``image2`` before ``image10``: digit runs compare as numbers."""
    parts = re.split(r"(\d+)", str(path))
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts) + ((2, 0, str(path)),)


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _folder_frames(folder: Path, ignore: set[Path]) -> list[Path]:
    """Every frame file of ``folder``; any other visible file is an error (it may be a frame in
    a format we do not read, or a stray file that would shift every LED by one)."""
    files = []
    for p in sorted(folder.iterdir(), key=natural_key):
        if p.name.startswith(".") or p.is_dir() or p.resolve() in ignore:
            continue
        if p.suffix.lower() not in FRAME_SUFFIXES:
            raise FPMInputError("not an image frame (.png, .tif or .tiff) in the frames folder; move it out or "
                                f"pick the frames with a quoted pattern such as '{folder / '*.png'}'", p)
        files.append(p)
    if not files:
        raise FPMInputError("no frames (.png, .tif or .tiff files) in this folder", folder)
    return files


def frame_files(frames: str | Path | Sequence[str | Path], *, ignore: Sequence[str | Path] = ()) -> list[Path]:
    """The frame files named by ``frames``, in natural order.

    ``frames``: a folder (all its ``.png``/``.tif``/``.tiff`` files; any other visible file is an
    error), a glob pattern (``"DIR/image*.png"``), a file, or a list of these. ``ignore``: files
    to skip inside a folder (the board CSV or dark frame kept beside the frames).
    """
    items = [frames] if isinstance(frames, (str, Path)) else list(frames)
    if not items:
        raise FPMInputError("no frames given (a folder, a quoted pattern such as 'DIR/image*.png', or files)")
    skip = {Path(p).resolve() for p in ignore}
    found: list[Path] = []
    for item in items:
        text = str(item)
        path = Path(item)
        if path.is_dir():
            found += _folder_frames(path, skip)
        elif _is_glob(text) and not path.exists():
            matches = [Path(m) for m in glob.glob(text) if Path(m).is_file() and Path(m).resolve() not in skip]
            if not matches:
                raise FPMInputError("no file matches this pattern", text)
            found += matches
        else:
            found.append(check_readable(path))
    unique = list({p.resolve(): p for p in found}.values())
    return sorted(unique, key=natural_key)


def looks_like_frames_folder(folder: str | Path) -> bool:
    """A folder holding at least two frame files (``.png``/``.tif``/``.tiff``) and no native data
    set (a TIFF with its ``.json`` sidecar). Cheap (names only) and never raises: napari asks
    this for every dropped folder."""
    try:
        folder = Path(folder)
        if not folder.is_dir():
            return False
        names = [p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file()]
        frames = [p for p in names if p.suffix.lower() in FRAME_SUFFIXES]
        sidecars = {p.stem for p in names if p.suffix.lower() == ".json"}
        native = [p for p in frames if p.suffix.lower() != ".png" and p.stem in sidecars]
        return len(frames) >= 2 and not native
    except OSError:
        return False


def frames_label(frames: str | Path | Sequence[str | Path]) -> str:
    """How the user named the frames (for messages and the sidecar's ``import.frames``)."""
    items = [frames] if isinstance(frames, (str, Path)) else list(frames)
    if len(items) == 1:
        return str(items[0])
    return f"{items[0]} (+{len(items) - 1} more)" if items else "(no frames)"


# ---- frame headers and pixels ----------------------------------------------------------------
@dataclass(frozen=True)
class FrameFile:
    """One input file: ``pages`` frames of ``shape`` (rows, cols) and data type ``dtype``."""

    path: Path
    pages: int
    shape: tuple[int, int]
    dtype: np.dtype


def _png_header(path: Path) -> tuple[int, int, int, int]:
    """``(height, width, bit_depth, colour_type)`` from the PNG's IHDR chunk."""
    with open(path, "rb") as fh:
        head = fh.read(33)
    if len(head) < 33 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise FPMInputError("not a PNG image (truncated or another format with a .png name)", path)
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    return height, width, depth, colour


def _probe_png(path: Path) -> FrameFile:
    height, width, depth, colour = _png_header(path)
    if depth not in (8, 16) or (depth == 16 and colour not in (_PNG_GREY, _PNG_GREY_ALPHA)):
        kind = "colour " if colour not in (_PNG_GREY, _PNG_GREY_ALPHA) else ""
        raise FPMInputError(f"{depth}-bit {kind}PNG: frames must be 8- or 16-bit greyscale PNGs (16-bit colour "
                            "PNGs lose precision on reading; save the camera's monochrome frames)", path)
    if not width or not height:
        raise FPMInputError(f"PNG of {height}x{width} px holds no image", path)
    return FrameFile(path, 1, (height, width), np.dtype(np.uint16 if depth == 16 else np.uint8))


def _probe_tiff(path: Path) -> FrameFile:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        pages = list(tif.pages)
        if not pages:
            raise FPMInputError("TIFF holds no image", path)
        first = pages[0]
        shape = (int(first.imagelength), int(first.imagewidth))
        for page in pages:
            if getattr(page, "imagedepth", 1) > 1:
                raise FPMInputError("TIFF page holds a volume; each page must be one 2D frame", path)
            if (int(page.imagelength), int(page.imagewidth)) != shape or page.dtype != first.dtype:
                raise FPMInputError(f"TIFF pages differ in size or data type ({shape[0]}x{shape[1]} {first.dtype} "
                                    f"then {page.imagelength}x{page.imagewidth} {page.dtype})", path)
        return FrameFile(path, len(pages), shape, np.dtype(first.dtype))


def probe_frame_file(path: Path) -> FrameFile:
    """Read one input file's header: frame count, shape and data type (no pixels decoded)."""
    path = check_readable(path)
    suffix = path.suffix.lower()
    if suffix not in FRAME_SUFFIXES:
        raise FPMInputError("not an image frame (.png, .tif or .tiff)", path)
    try:
        if suffix == ".png":
            info = _probe_png(path)
        elif is_tiff(path):
            info = _probe_tiff(path)
        else:
            raise FPMInputError("not a TIFF image (truncated or another format with a .tif name)", path)
    except FPMInputError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        raise FPMInputError(f"cannot read the frame (truncated or corrupt?): {one_line(exc)}", path) from None
    if info.dtype.name not in FRAME_DTYPES:
        raise FPMInputError(f"frames of data type {info.dtype} are not supported (expected 8/16-bit unsigned "
                            "integers or floats)", path)
    return info


def _monochrome(arr: np.ndarray, path: Path) -> np.ndarray:
    """A colour image whose R, G, B channels are equal as one 2D frame; else a one-line error."""
    if arr.ndim == 2:
        return arr
    rgb = arr[..., :3] if arr.shape[-1] >= 3 else arr[..., :1]  # drop an alpha channel
    if rgb.shape[-1] == 3 and not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
        raise FPMInputError("colour frame (its R, G and B channels differ): FPM needs one intensity per pixel at one "
                            "wavelength; save monochrome frames (or the one channel the LED colour lights)", path)
    return np.ascontiguousarray(rgb[..., 0])


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        if img.mode == "P":
            img = img.convert("RGB")
        arr = np.asarray(img)
    if arr.dtype == np.int32:  # 16-bit greyscale read as mode "I" by some Pillow versions
        arr = arr.astype(np.uint16)
    return arr


def _tiff_page(page, path: Path) -> np.ndarray:
    arr = np.asarray(page.asarray())
    spp = int(getattr(page, "samplesperpixel", 1))
    if spp > 1 and arr.ndim == 3 and arr.shape[0] == spp and arr.shape[-1] != spp:
        arr = np.moveaxis(arr, 0, -1)  # planar (separate) samples -> last axis
    return arr


def iter_frames(files: Sequence[FrameFile]) -> Iterator[tuple[Path, np.ndarray]]:
    """Decode the frames one at a time, in order: ``(file, 2D array in the file's data type)``."""
    import tifffile

    for info in files:
        try:
            if info.path.suffix.lower() == ".png":
                yield info.path, _checked(_monochrome(_read_png(info.path), info.path), info)
            else:
                with tifffile.TiffFile(info.path) as tif:
                    for page in tif.pages:
                        yield info.path, _checked(_monochrome(_tiff_page(page, info.path), info.path), info)
        except FPMInputError:
            raise
        except MemoryError:
            raise FPMInputError("not enough memory to decode the frame", info.path) from None
        except Exception as exc:
            raise FPMInputError(f"cannot read the frame (truncated or corrupt?): {one_line(exc)}", info.path) from None


def _checked(arr: np.ndarray, info: FrameFile) -> np.ndarray:
    """The decoded frame matches its header; float frames are finite and >= 0."""
    if arr.shape != info.shape or arr.dtype != info.dtype:
        raise FPMInputError(f"decoded frame is {arr.shape} {arr.dtype}, its header says {info.shape} {info.dtype}",
                            info.path)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise FPMInputError("frame holds NaN or infinite values", info.path)
        if arr.min() < 0:
            raise FPMInputError(f"frame holds negative values (min {float(arr.min()):g}); intensities are >= 0 (import "
                                "the raw frames and give the dark level instead)", info.path)
    return arr


def probe_frames(files: Sequence[Path]) -> list[FrameFile]:
    """Headers of every file; all frames must share one shape and one data type."""
    infos = [probe_frame_file(p) for p in files]
    first = infos[0]
    for info in infos[1:]:
        if info.shape != first.shape:
            raise FPMInputError(f"frame is {info.shape[0]}x{info.shape[1]} px but {first.path.name} is "
                                f"{first.shape[0]}x{first.shape[1]} px: all frames must have one size", info.path)
        if info.dtype != first.dtype:
            raise FPMInputError(f"frame is {info.dtype} but {first.path.name} is {first.dtype}: all frames must have "
                                "one data type", info.path)
    return infos


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


def _positive(name: str, value, where=None) -> float:
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
        distance = _positive("the LED distance (--led-distance-mm, board to sample in mm)", self.distance_mm, where)
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
            pitch = _positive("the LED pitch (--led-pitch-mm)", self.pitch_mm, frames)
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


# ---- optics, saturation and dark -------------------------------------------------------------
def check_optics(optics: dict, frames: str) -> dict[str, float]:
    """``wavelength_um``, ``na_obj``, ``mag``, ``pixel_um``: present, finite, in range."""
    out = {}
    for key, (what, option) in OPTICS_HELP.items():
        value = optics.get(key)
        if value is None:
            raise MissingParameterError(f"{key} ({what})", f"the frames do not say it: pass {option}", frames)
        out[key] = _positive(f"{option} ({what})", value, frames)
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
    value = _positive("--saturation (the camera's saturation level)", level, frames)
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
