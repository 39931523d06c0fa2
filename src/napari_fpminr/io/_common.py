"""Helpers shared by the raw-data readers: one-line errors, MATLAB files, building RawData."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FPMInputError
from ..optics.system import Optics
from ..rawdata import RawData

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


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


def mat_v5_truncated(path: Path) -> bool:
    """True when a MATLAB v5 file's top-level data elements run past the end of the file.

    Walks the 8-byte element tags (type, byte count) after the 128-byte header; uncompressed
    elements are padded to 8 bytes, ``miCOMPRESSED`` (type 15) ones are not.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(128)
        order = "<" if head[126:128] == b"IM" else ">"
        offset = 128
        while offset < size:
            fh.seek(offset)
            tag = fh.read(8)
            if len(tag) < 8:
                return True
            dtype, nbytes = np.frombuffer(tag, dtype=f"{order}u4")
            if dtype >> 16:  # small data element format: never at top level of a valid file
                return True
            pad = 0 if dtype == 15 else (-int(nbytes)) % 8
            offset += 8 + int(nbytes) + pad
        return offset > size + 7  # tolerate a missing final pad


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


def load_mat(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """Load the named variables of a MATLAB v5 or v7.3 file, in MATLAB's axis order.

    v7.3 files are HDF5 and store arrays with reversed axes (a MATLAB ``H×W×N`` array reads as
    ``N×W×H`` in h5py); they are transposed back here, so both versions give identical arrays
    (row-major, rows = MATLAB's first index). Missing variables are simply absent from the result.
    Raises ``FPMInputError`` for a truncated or corrupt file.
    """
    try:
        if is_hdf5(path):
            import h5py

            out = {}
            with h5py.File(path, "r") as f:
                for name in names:
                    if name in f and isinstance(f[name], h5py.Dataset):
                        out[name] = _h5_value(f[name]).T
            return out
        import scipy.io

        data = scipy.io.loadmat(path, variable_names=names, squeeze_me=False, mat_dtype=False)
        return {k: np.asarray(v) for k, v in data.items() if not k.startswith("__")}
    except FPMInputError:
        raise
    except Exception as exc:  # scipy/h5py raise many types for damaged files
        raise FPMInputError(f"cannot read MATLAB file (truncated or corrupt?): {one_line(exc)}", path) from None


def mat_variable_names(path: Path) -> list[str] | None:
    """Top-level variable names of a MATLAB v5/v7.3 or plain HDF5 file; ``None`` if unreadable."""
    try:
        if is_hdf5(path):
            import h5py

            with h5py.File(path, "r") as f:
                return list(f.keys())
        if is_mat_v5(path):
            import scipy.io

            if mat_v5_truncated(path):
                return None
            return [name for name, _, _ in scipy.io.whosmat(path)]
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
    return np.moveaxis(arr, -1, 0)


def check_led_count(n_images: int, n_leds: int, images_key: str, leds_key: str, path: Path) -> None:
    if n_images != n_leds:
        raise FPMInputError(f"{images_key} has {n_images} images but {leds_key} lists {n_leds} LEDs", path)


def build_raw(path: Path, intensities: np.ndarray, *, fmt: str, z_um: float | None = None,
              meta: dict[str, Any] | None = None, **optics: Any) -> RawData:
    """Construct ``Optics`` + ``RawData``, turning validation errors into one-line FPMInputErrors."""
    na = np.asarray(optics.get("na_illum"), dtype=np.float64)
    if not np.all(np.isfinite(na)):
        raise FPMInputError(f"illumination NAs contain {int(np.count_nonzero(~np.isfinite(na)))} "
                            "NaN or infinite values", path)
    if na.size and np.hypot(na[:, 0], na[:, 1]).max() >= 1.0:
        raise FPMInputError(f"illumination NA up to {np.hypot(na[:, 0], na[:, 1]).max():.3f} (must be < 1)", path)
    try:
        opt = Optics(**optics)
    except ValueError as exc:
        raise FPMInputError(one_line(exc), path) from None
    return RawData(intensities=intensities, optics=opt, source=path, z_um=z_um,
                   meta={"format": fmt, **(meta or {})})
