"""npe2 reader: FPM raw data (every format ``io.read_raw`` knows) and ``.fpminr`` models.

Which files reach us is decided first by the manifest's filename patterns (napari asks the
user to choose whenever two plugins' patterns match a name), then by ``get_reader``:

* ``*.fpminr`` and ``*.mat``: only we claim them. A model is ours by name; a ``.mat`` that is not
  FPM raw data still gets a reader, which shows the core's one-line reason ("not a recognised
  FPM raw-data file (expected ...); it holds: ...") instead of napari's generic plugin error.
* ``*.json``: the sidecar of a native raw set (a ``.tif``/``.tiff`` stack of the same name
  beside it): dropping it opens the stack as FPM raw data. Any other ``.json`` gets a one-line
  reason too.
* ``*.hdf5``/``*.h5`` (PtyLab): shared with napari's builtin reader; ``None`` unless the content
  is ours, so napari falls through.
* ``*.tif``/``*.tiff`` are **not** in the manifest: napari's builtin reader also claims every
  TIFF, and listing them made napari ask which reader to use for every dropped TIFF. Ordinary
  TIFFs therefore open in napari as usual. A native FPM set opens by dropping its ``.json``
  sidecar, or with ``fpminr gui data.tif`` (the launcher calls this reader directly):
  ``get_reader`` accepts a TIFF that has our sidecar and answers ``None`` for any other TIFF.

* a folder (``accepts_directories``) of camera frames (``.png``/``.tif``, at least two, no
  native data set inside): opens the import dialog (:mod:`._import_dialog`), which asks for the
  LED board and the optics, writes the native set and opens it. Any other folder: ``None``
  (napari's own reader opens folders of images as a plain stack; napari asks which to use).

For a file that *is* ours but is damaged, the reader shows one notification carrying the
core's ``FPMInputError`` message and returns napari's null-layer sentinel ``[(None,)]`` so that
no second error follows. The reader also installs the viewer decorations
(:mod:`._viewer`: the raw stack opens on its brightest bright-field LED).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from napari.utils.notifications import show_error

from ..errors import FPMInputError
from ._layers import model_layer_data, raw_layer_data

MODEL_SUFFIX = ".fpminr"
SIDECAR_SUFFIX = ".json"
TIFF_SUFFIXES = (".tif", ".tiff")
#: suffixes no other napari reader claims: we answer for them, with a reason when not ours
EXCLUSIVE_SUFFIXES = (".mat", SIDECAR_SUFFIX)
_NULL_LAYER: list[tuple[Any, ...]] = [(None,)]
# what a damaged file of ours may raise through the core's readers besides FPMInputError
_READ_ERRORS = (FPMInputError, OSError, ValueError, KeyError, TypeError, EOFError)

LayerData = tuple[Any, ...]
ReaderFunction = Callable[[Any], list[LayerData]]


def looks_like_model(path: str | os.PathLike) -> bool:
    """A ``.fpminr`` file: ours by name, even when damaged (then ``load_model`` says why).

    Cheap on purpose: napari calls readers for every dropped file. Never raises.
    """
    p = Path(path)
    return p.suffix.lower() == MODEL_SUFFIX and p.is_file()


def _raw_format(path: str | os.PathLike) -> str | None:
    from ..io import detect_format

    try:
        return detect_format(path)
    except Exception:  # noqa: BLE001 - the contract says never raise; be defensive anyway
        return None


def sidecar_stack(path: str | os.PathLike) -> Path | None:
    """The native TIFF stack whose JSON sidecar ``path`` is (same stem), or None."""
    p = Path(path)
    if p.suffix.lower() != SIDECAR_SUFFIX:
        return None
    for suffix in TIFF_SUFFIXES:
        for candidate in (p.with_suffix(suffix), p.with_suffix(suffix.upper())):
            if candidate.is_file() and _raw_format(candidate) == "native":
                return candidate
    return None


def is_ours(path: str | os.PathLike) -> bool:
    """Model, raw data of a known format, or the sidecar of a native stack. Never raises."""
    return looks_like_model(path) or sidecar_stack(path) is not None or _raw_format(path) is not None


def get_reader(path: str | list[str]) -> ReaderFunction | None:
    """Return a reader for our files, ``None`` for anything else (napari then tries the others).

    Files with a suffix only this plugin claims (``.mat``, ``.json``) always get the reader:
    for foreign content it explains in one notification what it expected.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        return None
    if len(paths) == 1 and Path(paths[0]).is_dir():
        from ..io.frames import looks_like_frames_folder
        from ._zarr_stack import is_fpm_zarr

        if is_fpm_zarr(paths[0]):  # an fpm OME-Zarr stack: multiscale z layers (see _zarr_stack.py)
            return read_paths

        return read_frames_folder if looks_like_frames_folder(paths[0]) else None
    for p in paths:
        if not Path(p).is_file():
            return None
        if not (is_ours(p) or Path(p).suffix.lower() in EXCLUSIVE_SUFFIXES):
            return None
    return read_paths


def read_frames_folder(path: str | list[str], **_: Any) -> list[LayerData]:
    """A folder of camera frames: open the import dialog (:mod:`._import_dialog`), which writes the
    native data set and adds its raw layer once the user has said what the frames do not."""
    from ._import_dialog import open_import_dialog

    folder = path if isinstance(path, (str, os.PathLike)) else path[0]
    open_import_dialog(os.fspath(folder))
    return _NULL_LAYER


def _error_message(path: str, exc: BaseException) -> str:
    if isinstance(exc, FPMInputError):
        return str(exc)
    return str(FPMInputError(f"cannot read this file ({type(exc).__name__}: {exc})", path))


def read_paths(path: str | list[str], **_: Any) -> list[LayerData]:
    """Read every path into layer data; damaged or foreign files produce one notification each."""
    from ._viewer import watch

    watch()  # the current viewer: decorations apply when napari inserts the layers
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list[LayerData] = []
    for p in map(os.fspath, paths):
        try:
            layers.extend(read_one(p))
        except _READ_ERRORS as exc:
            show_error(_error_message(p, exc))
    return layers or _NULL_LAYER


def _mosaic_layers(path: str) -> list[LayerData]:
    """A mosaic's layers; anything a damaged mosaic raises on the way is the core's one-line error."""
    from ..io.mosaic_file import load_mosaic
    from ._mosaic import mosaic_layer_data

    try:
        return mosaic_layer_data(load_mosaic(path))
    except FPMInputError:
        raise
    except (MemoryError, ValueError, KeyError, TypeError, IndexError, OverflowError) as exc:
        raise FPMInputError(f"cannot show this mosaic ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})",
                            path) from None


def read_one(path: str) -> list[LayerData]:
    """Layer data for one file; raises the core's errors (``read_paths`` turns them into notes)."""
    if Path(path).is_dir():
        from ._zarr_stack import zarr_layer_data

        return zarr_layer_data(path)
    if Path(path).suffix.lower() == MODEL_SUFFIX:
        from ..io.model_file import load_model
        from ..io.mosaic_file import is_mosaic

        from ..colour.mosaic import is_colour_mosaic

        if is_colour_mosaic(path):  # three channel mosaics: one lazy multiscale RGB layer (see _colour.py)
            from ..colour.mosaic import load_colour_mosaic
            from ._colour import colour_mosaic_layer_data

            return colour_mosaic_layer_data(load_colour_mosaic(path))
        if is_mosaic(path):  # a whole slide: one lazy multiscale layer (see _mosaic.py)
            return _mosaic_layers(path)
        from ..colour.file import is_colour_model

        if is_colour_model(path):  # red, green, blue: one lazy RGB z-stack (see _colour.py)
            from ..colour.file import load_colour_model
            from ._colour import colour_layer_data

            return colour_layer_data(load_colour_model(path, device="cpu"), name=Path(path).stem)
        return model_layer_data(load_model(path, device="cpu"))
    from ..io import read_raw

    if Path(path).suffix.lower() == SIDECAR_SUFFIX:
        stack = sidecar_stack(path)
        if stack is None:
            raise FPMInputError("not the JSON sidecar of an FPM raw stack (expected a .tif/.tiff stack "
                                "of the same name beside it, with wavelength_um, na_obj, mag, pixel_um "
                                "and the LED geometry in this file)", path)
        return [raw_layer_data(read_raw(stack))]
    return [raw_layer_data(read_raw(path))]
