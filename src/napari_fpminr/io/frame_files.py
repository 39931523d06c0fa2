"""Which camera frames an import takes and how they are read (:mod:`.frames`).

Frames are taken in natural order of their file names (``image2`` before ``image10``), pages of a
multi-page TIFF in page order. Only headers are read to check them (one shape, one data type);
:func:`iter_frames` then decodes one frame at a time. Colour frames are refused unless their
channels are equal (a monochrome image saved as RGB).
"""

from __future__ import annotations

import glob
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FPMInputError
from ._common import check_readable, one_line
from .native import is_tiff

__all__ = ["FRAME_DTYPES", "FRAME_SUFFIXES", "FrameFile", "PNG_SIGNATURE", "frame_files", "frames_label", "iter_frames", "looks_like_frames_folder", "natural_key", "probe_frame_file", "probe_frames"]

FRAME_SUFFIXES = (".png", ".tif", ".tiff")
FRAME_DTYPES = ("uint8", "uint16", "float16", "float32", "float64")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG colour types (IHDR): grey, RGB, palette, grey + alpha, RGB + alpha
_PNG_GREY, _PNG_RGB, _PNG_PALETTE, _PNG_GREY_ALPHA, _PNG_RGBA = 0, 2, 3, 4, 6


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
