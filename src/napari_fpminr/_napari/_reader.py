"""npe2 reader: FPM raw data (every format ``io.read_raw`` knows) and ``.fpminr`` models.

``get_reader`` is called by napari for every file dropped on the viewer whose name matches the
manifest's patterns. It answers ``None`` (never raises) for files that are not ours, so napari
falls through to other readers: raw files are recognised by content with ``io.detect_format``,
models by the ``.fpminr`` suffix. For a file that *is* ours but is
damaged, the returned reader shows one notification carrying the core's ``FPMInputError``
message and returns napari's null-layer sentinel ``[(None,)]`` so that no second error follows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from napari.utils.notifications import show_error

from ..errors import FPMInputError
from ._layers import model_layer_data, raw_layer_data

MODEL_SUFFIX = ".fpminr"
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


def get_reader(path: str | list[str]) -> ReaderFunction | None:
    """Return a reader for our files, ``None`` for anything else."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        return None
    for p in paths:
        if not Path(p).is_file():
            return None
        if not (looks_like_model(p) or _raw_format(p) is not None):
            return None
    return read_paths


def _error_message(path: str, exc: BaseException) -> str:
    if isinstance(exc, FPMInputError):
        return str(exc)
    return str(FPMInputError(f"cannot read this file ({type(exc).__name__}: {exc})", path))


def read_paths(path: str | list[str], **_: Any) -> list[LayerData]:
    """Read every path into layer data; damaged files produce one notification each."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list[LayerData] = []
    for p in map(os.fspath, paths):
        try:
            layers.extend(read_one(p))
        except _READ_ERRORS as exc:
            show_error(_error_message(p, exc))
    return layers or _NULL_LAYER


def read_one(path: str) -> list[LayerData]:
    """Layer data for one file; raises the core's errors (``read_paths`` turns them into notes)."""
    if Path(path).suffix.lower() == MODEL_SUFFIX:
        from ..io.model_file import load_model

        return model_layer_data(load_model(path, device="cpu"))
    from ..io import read_raw

    return [raw_layer_data(read_raw(path))]
