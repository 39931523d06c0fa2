"""Helpers shared by the raw-data readers: one-line errors, MATLAB files, building RawData."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FPMInputError
from ..optics.system import Optics
from ..rawdata import RawData
from .budget import check_memory
from .mat_headers import mat_v5_variables, read_mat_v5

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAT_HEADER_TEXT = b"MATLAB 5.0 MAT-file"
#: plausibility limits for parameters read from files or given on the command line
MAX_WAVELENGTH_UM = 10.0
MAX_UPSAMPLE = 32
MAX_HR_SIDE = 65536
#: datasets other than the image stack hold a few numbers (LED tables, scalars, a pupil);
#: anything declared larger is refused before it is read
MAX_SMALL_ELEMENTS = 1 << 24


def one_line(exc: BaseException, limit: int = 160) -> str:
    """An exception's message squeezed onto one short line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_hdf5(path: Path) -> bool:
    """HDF5 signature at offset 0, 512, 1024, ... (MATLAB v7.3 files have a 512-byte userblock)."""
    try:
        with open(path, "rb") as fh:
            offset = 0
            size = path.stat().st_size
            while offset + 8 <= size and offset <= 8192:
                fh.seek(offset)
                if fh.read(8) == HDF5_SIGNATURE:
                    return True
                offset = 512 if offset == 0 else offset * 2
    except OSError:
        return False
    return False


def is_mat_v5(path: Path) -> bool:
    """MATLAB level-5 MAT-file header text."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(128)
    except OSError:
        return False
    return len(head) == 128 and head.startswith(b"MATLAB 5.0 MAT-file")


def mat_header_truncated(path: Path) -> int | None:
    """Bytes present when a file starts like a MATLAB v5 header but ends inside its 128 bytes."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(128)
    except OSError:
        return None
    if len(head) < 128 and head.startswith(MAT_HEADER_TEXT[: max(1, min(len(head), len(MAT_HEADER_TEXT)))]) \
            and len(head) >= 6:
        return len(head)
    return None


def check_readable(path: str | Path) -> Path:
    """The path as a ``Path`` if it is a non-empty regular file; else a one-line FPMInputError."""
    path = Path(path)
    if not path.exists():
        raise FPMInputError("file not found", path)
    if not path.is_file():
        raise FPMInputError("not a file (a folder or special file)", path)
    try:
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise FPMInputError(f"cannot open file: {one_line(exc)}", path) from None
    if size == 0:
        raise FPMInputError("file is empty (0 bytes)", path)
    return path


def _h5_value(dataset) -> np.ndarray:
    arr = dataset[()]
    arr = np.asarray(arr)
    if arr.dtype.names and {"real", "imag"} <= set(arr.dtype.names):  # MATLAB complex
        arr = arr["real"] + 1j * arr["imag"]
    return arr


def h5_dataset(group, name: str, path: Path):
    """The dataset ``name`` of an open HDF5 group, or ``None`` when absent.

    Links are inspected before anything is resolved: an external link (to another file, possibly
    outside the data folder) is never followed and is refused; a soft link must point inside the
    file at a dataset. Unrelated entries of the file, broken links included, are never touched.
    """
    import h5py

    link = group.get(name, getlink=True)
    if link is None:
        return None
    if isinstance(link, h5py.ExternalLink):
        raise FPMInputError(f"'{name}' is an external link to {link.filename}:{link.path}; external links "
                            "are not followed (copy the data into the file)", path)
    obj = group.get(name)
    if obj is None:
        raise FPMInputError(f"'{name}' is a broken link (to {getattr(link, 'path', '?')})", path)
    if not isinstance(obj, h5py.Dataset):
        raise FPMInputError(f"'{name}' must be a dataset, got a {type(obj).__name__.lower()}", path)
    return obj


def read_h5_datasets(group, names, path: Path, *, large: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Read only the named datasets; sizes are checked from their headers before any data is read.

    Names in ``large`` (image stacks) may be as big as the memory budget allows (twice: the file's
    values and a float32 copy); the others must hold at most ``MAX_SMALL_ELEMENTS`` numbers.
    """
    out = {}
    for name in names:
        ds = h5_dataset(group, name, path)
        if ds is None:
            continue
        n = int(np.prod(ds.shape, dtype=np.float64)) if ds.shape is not None else 0
        if name in large:
            if ds.attrs.get("MATLAB_class") in (b"logical", "logical"):
                raise FPMInputError(f"{name} has data type logical, which holds no camera intensities "
                                    "(expected unsigned integers or floats)", path)
            check_memory(n * (ds.dtype.itemsize + 4), f"reading '{name}' (shape {ds.shape})", path)
        elif n > MAX_SMALL_ELEMENTS:
            raise FPMInputError(f"'{name}' declares {n} values (shape {ds.shape}); expected a few numbers", path)
        out[name] = _h5_value(ds)
    return out


def _check_mat_v5_sizes(path: Path, names: list[str], large: tuple[str, ...]) -> None:
    """Refuse variables whose declared (decompressed) size exceeds the budget, before decoding them."""
    for var in mat_v5_variables(path):
        if var.name not in names:
            continue
        n = int(np.prod(var.shape, dtype=np.float64))
        dims = "x".join(map(str, var.shape))
        if var.name in large:
            if var.logical:
                raise FPMInputError(f"{var.name} has data type logical, which holds no camera intensities "
                                    "(expected unsigned integers or floats)", path)
            check_memory(var.nbytes + 4 * n, f"reading '{var.name}' ({var.class_name} {dims})", path)
        elif n > MAX_SMALL_ELEMENTS:
            raise FPMInputError(f"'{var.name}' declares {n} values ({dims}); expected a few numbers", path)


def load_mat(path: Path, names: list[str], large: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Load the named variables of a MATLAB v5 or v7.3 file, in MATLAB's axis order.

    v7.3 files are HDF5 and store arrays with reversed axes (a MATLAB ``H×W×N`` array reads as
    ``N×W×H`` in h5py); they are transposed back here, so both versions give identical arrays
    (row-major, rows = MATLAB's first index). Missing variables are simply absent from the result.
    Declared sizes are checked first (``large``: the image stack, against the memory budget; any
    other variable must be small), so a compressed variable that would expand beyond memory is
    refused before it is decompressed. Raises ``FPMInputError`` for a truncated or corrupt file.
    """
    try:
        if is_hdf5(path):
            import h5py

            with h5py.File(path, "r") as f:
                return {k: v.T for k, v in read_h5_datasets(f, names, path, large=large).items()}
        _check_mat_v5_sizes(path, names, large)
        return read_mat_v5(path, names)  # our decoder: every size checked (scipy's can crash)
    except FPMInputError:
        raise
    except MemoryError:
        raise FPMInputError("not enough memory to decode this MATLAB file", path) from None
    except Exception as exc:  # scipy/h5py raise many types for damaged files
        raise FPMInputError(f"cannot read MATLAB file (truncated or corrupt?): {one_line(exc)}", path) from None


def mat_variable_names(path: Path) -> list[str] | None:
    """Top-level variable names of a MATLAB v5/v7.3 or plain HDF5 file; ``None`` if unreadable."""
    try:
        if is_hdf5(path):
            import h5py

            with h5py.File(path, "r") as f:  # names that are not valid UTF-8 come back as bytes
                return [k if isinstance(k, str) else k.decode("utf-8", "replace") for k in f.keys()]
        if is_mat_v5(path):
            return [var.name for var in mat_v5_variables(path)]  # headers only, nothing decompressed
    except Exception:
        return None
    return None


def require_keys(data: dict[str, Any], keys, kind: str, layout: str, path: Path) -> None:
    """Raise ``"PATH: missing <kind> 'KEY' (<layout> needs A and B)"`` for the first absent key."""
    for key in keys:
        if key not in data:
            raise FPMInputError(f"missing {kind} '{key}' ({layout} needs {' and '.join(keys)})", path)


def scalar(data: dict[str, Any], key: str, path: Path, *, required: bool = True) -> float | None:
    """A finite real scalar variable (any 1-element array)."""
    if key not in data:
        if required:
            raise FPMInputError(f"missing variable '{key}'", path)
        return None
    arr = np.asarray(data[key])
    if arr.size != 1 or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise FPMInputError(f"'{key}' must be a real number, got shape {arr.shape} dtype {arr.dtype}", path)
    value = float(arr.reshape(()))
    if not np.isfinite(value):
        raise FPMInputError(f"'{key}' is not finite ({value})", path)
    return value


def stack_from_matlab(arr: np.ndarray, key: str, path: Path) -> np.ndarray:
    """MATLAB ``H×W×N`` image stack -> ``(N, H, W)`` (an ``H×W`` array is rejected)."""
    arr = np.asarray(arr)
    if arr.ndim != 3 or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise FPMInputError(
            f"{key} must be a real H x W x N image stack, got shape {arr.shape} dtype {arr.dtype}", path
        )
    check_image_dtype(arr, key, path)
    return np.moveaxis(arr, -1, 0)


def check_image_dtype(arr: np.ndarray, key: str, path: Path) -> None:
    """Refuse image types no camera writes: booleans (a mask?) and signed 8-bit integers."""
    if arr.dtype == np.bool_ or arr.dtype == np.int8:
        raise FPMInputError(f"{key} has data type {arr.dtype}, which holds no camera intensities "
                            "(expected unsigned integers or floats)", path)


def check_led_count(n_images: int, n_leds: int, images_key: str, leds_key: str, path: Path) -> None:
    if n_images != n_leds:
        raise FPMInputError(f"{images_key} has {n_images} images but {leds_key} lists {n_leds} LEDs", path)


def check_plausible(opt: Optics, n_images: int, lr_shape: tuple[int, int], path: Path) -> None:
    """Refuse parameters no FPM data set has; warn about duplicated LEDs.

    Wavelengths of 10 µm or more (a value in nm or m read as µm), fewer than two images, an
    ``upsample`` beyond ``MAX_UPSAMPLE`` or a reconstruction grid wider than ``MAX_HR_SIDE`` px.
    """
    if opt.wavelength_um >= MAX_WAVELENGTH_UM:
        raise FPMInputError(f"wavelength {opt.wavelength_um:g} um is implausible (must be < {MAX_WAVELENGTH_UM:g} "
                            "um; visible light is 0.4-0.8 um): is it stored in nm or m?", path)
    if n_images < 2:
        raise FPMInputError(f"only {n_images} image: Fourier ptychography needs several illumination angles", path)
    if opt.upsample > MAX_UPSAMPLE:
        raise FPMInputError(f"upsample {opt.upsample} is implausible (at most {MAX_UPSAMPLE}; these optics need "
                            f"{opt.required_upsample()})", path)
    hr = max(lr_shape) * opt.upsample
    if hr > MAX_HR_SIDE:
        raise FPMInputError(f"the reconstruction would be {hr} px wide (images {lr_shape[0]}x{lr_shape[1]} x upsample "
                            f"{opt.upsample}), more than {MAX_HR_SIDE}; crop the data", path)
    _, counts = np.unique(np.round(opt.na_illum, 9), axis=0, return_counts=True)
    if np.any(counts > 1):
        warnings.warn(f"{path}: {int(np.sum(counts[counts > 1]))} images share {int(np.sum(counts > 1))} "
                      "illumination NA(s) (duplicated LEDs); they are used as given", stacklevel=3)


def build_raw(path: Path, intensities: np.ndarray, *, fmt: str, z_um: float | None = None,
              meta: dict[str, Any] | None = None, leds=None, **optics: Any) -> RawData:
    """Construct ``Optics`` + ``RawData``, turning validation errors into one-line FPMInputErrors."""
    na = np.asarray(optics.get("na_illum"), dtype=np.float64)
    if not np.all(np.isfinite(na)):
        raise FPMInputError(f"illumination NAs contain {int(np.count_nonzero(~np.isfinite(na)))} "
                            "NaN or infinite values", path)
    if na.size and np.hypot(na[:, 0], na[:, 1]).max() >= 1.0:
        raise FPMInputError(f"illumination NA up to {np.hypot(na[:, 0], na[:, 1]).max():.3f} (must be < 1)", path)
    images = np.asarray(intensities)
    check_image_dtype(images, "intensities", path)
    try:
        opt = Optics(**optics)
    except (ValueError, OverflowError) as exc:
        raise FPMInputError(one_line(exc), path) from None
    if images.ndim == 3:
        check_plausible(opt, images.shape[0], images.shape[1:], path)
    return RawData(intensities=images, optics=opt, source=path, z_um=z_um,
                   meta={"format": fmt, **(meta or {})}, leds=leds)
