"""Content-based format detection and the single entry point :func:`read_raw`.

Formats (DESIGN.md §2): ``"fpminr_mat"`` (variables ``I_low`` + ``na_calib``, MATLAB v5 or
v7.3), ``"uconn"`` (``imlow_HDR`` + ``wlength``), ``"ptylab"`` (HDF5 ``ptychogram`` +
``encoder``), ``"native"`` (TIFF stack with a ``<stem>.json`` sidecar). Detection looks at the
bytes and variable names, never at the suffix alone.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import FPMInputError
from . import fpminr_mat, native, ptylab, uconn
from ._common import check_readable, is_hdf5, is_mat_v5, mat_header_truncated, mat_variable_names
from ..rawdata import RawData

FORMATS = ("fpminr_mat", "uconn", "ptylab", "native")
_READERS = {
    "fpminr_mat": fpminr_mat.read_fpminr_mat,
    "uconn": uconn.read_uconn,
    "ptylab": ptylab.read_ptylab,
    "native": native.read_native,
}
EXPECTED = ("expected an FPM-INR .mat (I_low, na_calib), a UConn .mat (imlow_HDR, wlength), "
            "a PtyLab .hdf5 (ptychogram, encoder) or a .tif stack with a .json sidecar")


def _format_from_names(names) -> str | None:
    keys = set(names)
    if {"I_low", "na_calib"} <= keys:
        return "fpminr_mat"
    if {"imlow_HDR", "wlength"} <= keys:
        return "uconn"
    if {"ptychogram", "encoder"} <= keys:
        return "ptylab"
    return None


def detect_format(path) -> str | None:
    """Which raw-data format ``path`` holds, or ``None`` when it is not one of ours.

    Never raises: missing, empty, unreadable or foreign files all give ``None``. A TIFF counts as
    ``"native"`` only when its JSON sidecar exists.
    """
    try:
        path = Path(path)
        if not path.is_file() or path.stat().st_size == 0:
            return None
        if native.is_tiff(path):
            ok = native.sidecar_path(path).is_file() and native.tiff_complete(path)
            return "native" if ok else None
        names = mat_variable_names(path)
        return None if names is None else _format_from_names(names)
    except Exception:
        return None


def read_raw(path, *, wavelength_um: float | None = None, na_obj: float | None = None,
             mag: float | None = None, pixel_um: float | None = None, upsample: int = 0) -> RawData:
    """Read any supported raw-data file into a validated :class:`RawData`.

    Keyword arguments fill parameters the file lacks or replace the file's values
    (``upsample`` 0 = the file's value if stored, else automatic). Images stay in the file's
    order. Raises :class:`~napari_fpminr.errors.FPMInputError` (one line, naming the file) for
    anything wrong, :class:`~napari_fpminr.errors.MissingParameterError` when a needed
    parameter is absent.
    """
    path = check_readable(path)
    fmt = detect_format(path)
    if fmt is None:
        head = mat_header_truncated(path)
        if head is not None:
            raise FPMInputError(f"truncated or corrupt MATLAB file: it ends after {head} bytes, inside the "
                                "128-byte header", path)
        if native.is_tiff(path):
            native.load_sidecar(path)  # raises when the sidecar is missing or invalid
            raise FPMInputError("cannot read TIFF (truncated or corrupt?)", path)
        if is_mat_v5(path) or is_hdf5(path):
            names = mat_variable_names(path)
            if names is None:
                kind = "MATLAB" if is_mat_v5(path) else "HDF5"
                raise FPMInputError(f"cannot read {kind} file (truncated or corrupt?)", path)
            shown = ", ".join(sorted(names)[:8]) + (", ..." if len(names) > 8 else "")
            raise FPMInputError(f"not a recognised FPM raw-data file ({EXPECTED}); it holds: {shown or 'nothing'}",
                                path)
        raise FPMInputError(f"not a recognised FPM raw-data file ({EXPECTED})", path)
    return _READERS[fmt](path, wavelength_um=wavelength_um, na_obj=na_obj, mag=mag, pixel_um=pixel_um,
                         upsample=upsample)
