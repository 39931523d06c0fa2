"""Raw data for tiled runs: each tile reads only its own window of the stack.

* native ``.tif`` + ``.json``: the TIFF is memory-mapped when its pages are stored contiguous and
  uncompressed (what ``fpminr simulate`` and tifffile write), otherwise it is read one page at
  a time, keeping only the window of each page;
* FPM-INR ``.mat`` v7.3 (HDF5): the window of ``I_low`` is read with h5py (hyperslab selection);
* every other format (MATLAB v5 ``.mat``, UConn ``.mat``, PtyLab ``.hdf5``) is read whole into
  memory once (:class:`MemorySource`): the tiles then crop it.

A source knows the whole frame's optics (``header``: a :class:`RawData` of a 2×2 px window that
carries the optics, LED geometry, stated defocus and metadata), the frame size, and the global
bright-field level (mean of the bright-field images over the whole frame, computed page by page),
so every tile's amplitude is put on the same scale.

A calibrated source (:func:`calibrated`) carries the calibrated optics and LED board in its header
and corrects every window it reads for the calibration's background and per-LED brightness, so
each tile sees the calibration exactly as a whole-frame run would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FPMInputError, MissingParameterError
from ..rawdata import RawData

__all__ = ["open_source", "calibrated", "MemorySource", "LazyTiffSource", "LazyMatSource"]


@dataclasses.dataclass
class _Base:
    header: RawData
    frame_shape: tuple[int, int]
    kind: str = "memory"
    #: ``(background, brightness)`` of an illumination calibration, applied to every window read
    correction: tuple[float, np.ndarray] | None = None

    @property
    def lazy(self) -> bool:
        return self.kind != "memory"

    def read_window(self, top: int, left: int, height: int, width: int) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def read_frames(self, leds) -> np.ndarray:  # pragma: no cover
        """Whole frames of the LEDs ``leds`` as stored (no calibration applied)."""
        raise NotImplementedError

    def _corrected(self, images: np.ndarray, leds=None) -> np.ndarray:
        """``(I - background) / brightness`` clipped at 0 (as :meth:`Calibration.apply`); ``leds``
        are the LEDs ``images`` holds (all without)."""
        if self.correction is None:
            return images
        background, brightness = self.correction
        b = np.asarray(brightness, np.float32) if leds is None else np.asarray(brightness, np.float32)[leds]
        return np.clip((images - np.float32(background)) / b[:, None, None], 0.0, None).astype(np.float32)

    def tile_raw(self, top: int, left: int, height: int, width: int) -> RawData:
        """The tile's :class:`RawData` (the frame's optics, its own window of every image)."""
        H, W = self.frame_shape
        if top < 0 or left < 0 or top + height > H or left + width > W:
            raise FPMInputError(f"tile window {top},{left} {height}x{width} is outside the {H}x{W} px frame",
                                self.header.source)
        images, valid = self.read_window_valid(top, left, height, width)
        return dataclasses.replace(self.header, intensities=self._corrected(images), valid=valid)

    def read_window_valid(self, top: int, left: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The window's intensities and valid-pixel mask (``None``: all valid, e.g. no saturation)."""
        return self.read_window(top, left, height, width), None

    def background_level(self) -> float:
        """Mean of the bright-field images over the whole frame (one image at a time)."""
        bf = np.flatnonzero(self.header.optics.bright_field)
        if bf.size == 0:
            bf = np.array([0])
        H, W = self.frame_shape
        rows = max(1, (16 << 20) // (4 * W * max(1, bf.size)))
        total = 0.0
        for r0 in range(0, H, rows):
            block = self._corrected(self.read_window(r0, 0, min(rows, H - r0), W)[bf], bf)
            total += float(block.sum(dtype=np.float64))
        level = total / (bf.size * H * W)
        if not level > 0:
            raise FPMInputError("bright-field images are all zero: cannot normalise", self.header.source)
        return level

    def identity(self) -> str:
        """What the job hash uses to recognise the input: file, size, modification time, optics."""
        h = hashlib.sha256()
        src = self.header.source
        if src is not None:
            st = Path(src).stat()
            h.update(f"{Path(src).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
        h.update(repr(sorted(self.header.optics.to_dict().items())).encode())
        return h.hexdigest()


@dataclasses.dataclass
class MemorySource(_Base):
    """The whole stack in memory (formats without lazy reading, in-memory data, simulations)."""

    raw: RawData | None = None

    @classmethod
    def from_raw(cls, raw: RawData) -> "MemorySource":
        header = dataclasses.replace(raw, intensities=raw.intensities[:, :2, :2], optics=raw.optics.replace(pupil=None),
                                     valid=None)
        return cls(header=header, frame_shape=raw.lr_shape, kind="memory", raw=raw)

    def read_window(self, top, left, height, width) -> np.ndarray:
        return self.raw.intensities[:, top:top + height, left:left + width]

    def read_window_valid(self, top, left, height, width):
        valid = None if self.raw.valid is None else self.raw.valid[:, top:top + height, left:left + width]
        return self.read_window(top, left, height, width), valid

    def read_frames(self, leds) -> np.ndarray:
        return np.asarray(self.raw.intensities[list(leds)], np.float32)

    def identity(self) -> str:
        if self.raw.source is not None:
            return super().identity()
        return self.raw.content_hash()


@dataclasses.dataclass
class LazyTiffSource(_Base):
    """A native TIFF stack read window by window (memory map or page by page).

    ``levels`` (:class:`napari_fpminr.io.native.CameraLevels`): the sidecar's saturation level and
    dark background (``fpminr import``), applied to each window as ``read_native`` applies them to
    the whole stack.
    """

    path: Path | None = None
    levels: Any = None

    def read_window(self, top, left, height, width) -> np.ndarray:
        return self.read_window_valid(top, left, height, width)[0]

    def read_window_valid(self, top, left, height, width):
        from ..io.native import apply_camera_levels

        window = self._stored_window(top, left, height, width)
        if self.levels is None:
            return window.astype(np.float32, copy=False), None
        images, valid = apply_camera_levels(window, self.levels.window(top, left, height, width))
        return np.asarray(images, dtype=np.float32), valid

    def _stored_window(self, top, left, height, width) -> np.ndarray:
        """The window of every page in the stored data type."""
        import tifffile

        try:
            try:
                mm = tifffile.memmap(self.path, mode="r")
            except ValueError:  # compressed or scattered pages: one page at a time
                mm = None
            if mm is not None:
                mm = mm if mm.ndim == 3 else mm[None]
                return np.array(mm[:, top:top + height, left:left + width])
            with tifffile.TiffFile(self.path) as tif:
                return np.stack([np.asarray(p.asarray()[top:top + height, left:left + width]) for p in tif.pages])
        except FPMInputError:
            raise
        except Exception as exc:
            raise FPMInputError(f"cannot read a window of the TIFF stack: {' '.join(str(exc).split())[:160]}",
                                self.path) from None

    def read_frames(self, leds) -> np.ndarray:
        import tifffile

        try:
            with tifffile.TiffFile(self.path) as tif:
                return np.stack([np.asarray(tif.pages[int(i)].asarray(), np.float32) for i in leds])
        except Exception as exc:
            raise FPMInputError(f"cannot read frames of the TIFF stack: {' '.join(str(exc).split())[:160]}",
                                self.path) from None


@dataclasses.dataclass
class LazyMatSource(_Base):
    """An FPM-INR v7.3 ``.mat`` (HDF5): ``I_low`` is stored ``N×W×H`` (MATLAB's reversed axes)."""

    path: Path | None = None

    def read_window(self, top, left, height, width) -> np.ndarray:
        import h5py

        try:
            with h5py.File(self.path, "r") as f:
                block = f["I_low"][:, left:left + width, top:top + height]
        except Exception as exc:
            raise FPMInputError(f"cannot read a window of I_low: {' '.join(str(exc).split())[:160]}",
                                self.path) from None
        return np.ascontiguousarray(np.transpose(block, (0, 2, 1)), dtype=np.float32)

    def read_frames(self, leds) -> np.ndarray:
        return np.stack([self._frame(int(i)) for i in leds])

    def _frame(self, i: int) -> np.ndarray:
        import h5py

        try:
            with h5py.File(self.path, "r") as f:
                frame = f["I_low"][i]
        except Exception as exc:
            raise FPMInputError(f"cannot read frame {i} of I_low: {' '.join(str(exc).split())[:160]}",
                                self.path) from None
        return np.ascontiguousarray(frame.T, dtype=np.float32)


def open_source(path, *, wavelength_um=None, na_obj=None, mag=None, pixel_um=None, upsample: int = 0) -> _Base:
    """A tile source for ``path``: lazy where the format allows, else the whole stack in memory."""
    from ..io import detect_format
    from ..io._common import check_readable, is_hdf5

    path = check_readable(path)
    fmt = detect_format(path)
    overrides = dict(wavelength_um=wavelength_um, na_obj=na_obj, mag=mag, pixel_um=pixel_um, upsample=upsample)
    if fmt == "native":
        return _open_tiff(path, **overrides)
    if fmt == "fpminr_mat" and is_hdf5(path):
        return _open_mat73(path, **overrides)
    from ..io import read_raw

    raw = read_raw(path, **overrides)
    if raw.optics.pupil is not None:
        raw = _drop_pupil(raw)
    return MemorySource.from_raw(raw)


def calibrated(source: _Base, cal) -> _Base:
    """``source`` seen through the illumination calibration ``cal`` (a :class:`Calibration`).

    The header takes the calibrated NAs and board (:meth:`Calibration.apply`: per-tile NAs then
    come from the calibrated board, seen from each tile's centre); every window read is corrected
    for the background and the LEDs' brightness.
    """
    return dataclasses.replace(source, header=cal.apply(source.header),
                               correction=(float(cal.background), np.asarray(cal.brightness, np.float64)))


def _drop_pupil(raw: RawData) -> RawData:
    warnings.warn(f"{raw.source}: the file's pupil belongs to the whole frame; tiles start from the ideal "
                  "pupil (use --recover-pupil to recover one per tile)", stacklevel=3)
    return raw.with_optics(pupil=None)


def _open_tiff(path: Path, *, wavelength_um, na_obj, mag, pixel_um, upsample) -> LazyTiffSource:
    import tifffile

    from ..io import native
    from ..io._common import build_raw

    meta = native.load_sidecar(path)
    side = native.sidecar_path(path)
    given = {"wavelength_um": wavelength_um, "na_obj": na_obj, "mag": mag, "pixel_um": pixel_um}
    params: dict[str, Any] = {}
    for key, value in given.items():
        if value is not None:
            params[key] = float(value)
        elif key in meta:
            params[key] = native._number(meta, key, side)
        else:
            raise MissingParameterError(f"'{key}'", f"add it to {side.name} or pass --{key.replace('_', '-')}", path)
    na = native.sidecar_na(meta, side)
    leds = native.sidecar_leds(meta, side)
    try:
        with tifffile.TiffFile(path) as tif:
            shape, dtype = tuple(tif.series[0].shape), tif.series[0].dtype
    except Exception as exc:
        raise FPMInputError(f"cannot read TIFF (truncated or corrupt?): {' '.join(str(exc).split())[:160]}",
                            path) from None
    if len(shape) == 2:
        shape = (1,) + shape
    if len(shape) != 3 or shape[0] != na.shape[0]:
        raise FPMInputError(f"TIFF holds shape {shape} but {side.name} lists {na.shape[0]} LEDs", path)
    z_um = native._number(meta, "z_um", side) if meta.get("z_um") is not None else None
    up = int(upsample) or (int(native._number(meta, "upsample", side)) if meta.get("upsample") else 0)
    probe = LazyTiffSource(header=None, frame_shape=shape[1:], kind="tiff", path=path)  # type: ignore[arg-type]
    probe.levels = native.camera_levels(meta, side, shape[1:], dtype)
    window = probe.read_window(0, 0, min(2, shape[1]), min(2, shape[2]))
    header = build_raw(path, window, fmt="native", z_um=z_um, meta={"sidecar": side.name, **probe.levels.meta()},
                       na_illum=na, upsample=up, leds=leds, **params)
    probe.header = header
    return probe


def _open_mat73(path: Path, **overrides) -> LazyMatSource:
    import h5py

    from ..io import fpminr_mat
    from ..io._common import build_raw, load_mat, scalar, stack_from_matlab

    names = [k for k in fpminr_mat.KEYS + fpminr_mat.OPTIONAL if k not in ("I_low", "pupil")]
    data = load_mat(path, names)
    try:
        with h5py.File(path, "r") as f:
            n, w, h = f["I_low"].shape
            corner = np.asarray(f["I_low"][:, :2, :2])
    except Exception as exc:
        raise FPMInputError(f"cannot read I_low: {' '.join(str(exc).split())[:160]}", path) from None
    images = stack_from_matlab(np.transpose(corner, (2, 1, 0)), "I_low", path)
    params = {}
    for key, name in fpminr_mat._OVERRIDE.items():
        value = overrides[name] if overrides[name] is not None else scalar(data, key, path, required=False)
        if value is None:
            raise MissingParameterError(f"'{key}'", fpminr_mat._HOW[key], path)
        params[name] = float(value)
    wl = overrides["wavelength_um"] if overrides["wavelength_um"] is not None else scalar(data, "lambda", path,
                                                                                        required=False)
    if wl is None:
        raise MissingParameterError("wavelength", fpminr_mat.WAVELENGTH_HINT, path)
    up = int(overrides["upsample"]) or int(scalar(data, "upsample", path, required=False) or 0)
    header = build_raw(path, images, fmt="fpminr_mat", z_um=scalar(data, "z_um", path, required=False),
                       meta={}, wavelength_um=float(wl), na_illum=np.asarray(data["na_calib"]), upsample=up,
                       **params)
    return LazyMatSource(header=header, frame_shape=(int(h), int(w)), kind="hdf5", path=path)
