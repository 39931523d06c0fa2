"""Writers (and the npz reader) for reconstructed z-stacks: ``.npz``, ImageJ ``.tif``, OME-Zarr ``.zarr``.

Every writer is atomic: the data go to a temporary sibling first and are renamed over the
target only when complete, so an interrupted or failed write never leaves a partial file and
never destroys an existing one.

Layout of each format (DESIGN.md §4):

* ``.npz``: arrays ``amplitude`` (Z, H, W), ``phase`` (Z, H, W), ``z_um`` (Z,), ``dx_um`` (scalar),
  and for all-in-focus results ``depth_um`` (H, W); no pickled objects.
* ``.tif``: ImageJ hyperstack, float32, axes ZCYX with channels (amplitude, phase) — or ZYX when
  only amplitude is written — with the pixel size in µm and the z spacing (``spacing``) in µm.
* ``.zarr``: OME-NGFF 0.4 image (zarr format 2), axes z/c/y/x with micrometre units and scale.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FPMInputError
from .atomic import DIR_MODE, FILE_MODE, atomic_write
from .safety import clean_stale, writing

STACK_SUFFIXES = (".npz", ".tif", ".tiff", ".zarr")


@dataclass
class StackArrays:
    """Plain arrays of a rendered stack (what the writers take and the npz reader returns)."""

    amplitude: np.ndarray  # (Z, H, W) float32
    phase: np.ndarray | None  # (Z, H, W) float32 or None
    z_um: np.ndarray  # (Z,)
    dx_um: float
    depth_um: np.ndarray | None = None  # (H, W) for all-in-focus results


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    global _EXCHANGE_SUPPORTED
    if not _EXCHANGE_SUPPORTED:
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        _EXCHANGE_SUPPORTED = False
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False  # this file system cannot: fall back to two renames
    raise OSError(err, os.strerror(err), str(b))


_EXCHANGE_SUPPORTED = sys.platform.startswith("linux")


def _commit_dir(tmp: Path, path: Path) -> None:
    """Replace folder ``path`` by ``tmp`` so that ``path`` always exists (or is recoverable).

    Where the file system can, both folders are exchanged in one atomic step and the old one is
    removed afterwards. Elsewhere the old folder is first renamed to ``.<name>.old-<pid>``; a run
    killed between the two renames leaves that backup, which
    :func:`~napari_fpminr.io.safety.clean_stale` moves back on the next run.
    """
    for folder, _, files in os.walk(tmp):
        os.chmod(folder, DIR_MODE)
        for name in files:
            os.chmod(os.path.join(folder, name), FILE_MODE)
    if not path.exists():
        os.replace(tmp, path)
        return
    if _exchange(tmp, path):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old content
        return
    backup = path.with_name(f".{path.name}.old-{os.getpid()}")
    os.replace(path, backup)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(backup, path)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def write_stack(path: str | Path, stack: StackArrays) -> Path:
    """Write ``stack`` to ``path``; the format follows the suffix (.npz, .tif/.tiff, .zarr).

    Atomic: a failure (including a full disk) leaves no partial output and keeps an existing one.
    Write errors become one-line :class:`FPMInputError` naming ``path``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in STACK_SUFFIXES:
        raise FPMInputError(f"unknown output format {suffix!r}; use one of {', '.join(STACK_SUFFIXES)}", path)
    _check(stack, path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".zarr":
            _write_zarr_atomic(path, stack)
        else:
            with atomic_write(path) as tmp:
                (_write_npz if suffix == ".npz" else _write_tif)(tmp, stack)
    return path


def _write_zarr_atomic(path: Path, stack: StackArrays) -> None:
    clean_stale(path)
    if path.exists() and not path.is_dir():
        raise FPMInputError("exists and is not a folder; remove it or choose another output", path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    try:
        _write_zarr(tmp, stack)
        _commit_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check(stack: StackArrays, path: Path) -> None:
    amp = np.asarray(stack.amplitude)
    if amp.ndim != 3:
        raise FPMInputError(f"amplitude must be (Z, H, W), got {amp.shape}", path)
    if stack.phase is not None and np.shape(stack.phase) != amp.shape:
        raise FPMInputError(f"phase shape {np.shape(stack.phase)} differs from amplitude {amp.shape}", path)
    if len(np.atleast_1d(stack.z_um)) != amp.shape[0]:
        raise FPMInputError(f"{len(np.atleast_1d(stack.z_um))} z values for {amp.shape[0]} planes", path)


def _write_npz(tmp: Path, stack: StackArrays) -> None:
    arrays = {
        "amplitude": np.asarray(stack.amplitude, np.float32),
        "z_um": np.asarray(stack.z_um, np.float64),
        "dx_um": np.float64(stack.dx_um),
    }
    if stack.phase is not None:
        arrays["phase"] = np.asarray(stack.phase, np.float32)
    if stack.depth_um is not None:
        arrays["depth_um"] = np.asarray(stack.depth_um, np.float32)
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def _z_spacing(z_um: np.ndarray) -> float:
    z = np.atleast_1d(np.asarray(z_um, np.float64))
    return float(np.median(np.diff(z))) if z.size > 1 else 1.0


def _write_tif(tmp: Path, stack: StackArrays) -> None:
    import tifffile

    amp = np.asarray(stack.amplitude, np.float32)
    if stack.phase is not None:
        data = np.stack([amp, np.asarray(stack.phase, np.float32)], axis=1)  # Z C Y X
        axes = "ZCYX"
    else:
        data = amp
        axes = "ZYX"
    z = np.atleast_1d(np.asarray(stack.z_um, np.float64))
    metadata = {"axes": axes, "spacing": _z_spacing(z), "unit": "um",
                "Info": f"napari-fpminr z_um={z.tolist()}"}
    if stack.phase is not None:
        metadata["Labels"] = [f"{name} z={zz:.3f}um" for zz in z for name in ("amplitude", "phase")]
    res = 1.0 / stack.dx_um
    tifffile.imwrite(tmp, data, imagej=True, resolution=(res, res), metadata=metadata)


def _write_zarr(tmp: Path, stack: StackArrays) -> None:
    import zarr

    amp = np.asarray(stack.amplitude, np.float32)
    channels = [amp] if stack.phase is None else [amp, np.asarray(stack.phase, np.float32)]
    shape = (amp.shape[0], len(channels)) + amp.shape[1:]  # Z C Y X
    z = np.atleast_1d(np.asarray(stack.z_um, np.float64))
    root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
    # one chunk per (plane, channel), written one after the other: nothing is still writing in a
    # background thread when a failure (disk full) is raised and the temporary folder removed
    arr = root.create_array("0", shape=shape, dtype=np.float32, chunks=(1, 1) + shape[2:])
    for iz in range(shape[0]):
        for ic, channel in enumerate(channels):
            arr[iz, ic] = channel[iz]
    root.attrs["multiscales"] = [{
        "version": "0.4",
        "name": "fpminr",
        "axes": [
            {"name": "z", "type": "space", "unit": "micrometer"},
            {"name": "c", "type": "channel"},
            {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"},
        ],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [_z_spacing(z), 1.0, stack.dx_um, stack.dx_um]},
            {"type": "translation", "translation": [float(z[0]), 0.0, 0.0, 0.0]},
        ]}],
    }]
    root.attrs["omero"] = {"channels": [{"label": n} for n in ("amplitude", "phase")[: len(channels)]]}
    root.attrs["fpminr"] = {"z_um": z.tolist()}
    if stack.depth_um is not None:
        depth = np.asarray(stack.depth_um, np.float32)
        root.create_array("depth_um", shape=depth.shape, dtype=np.float32, chunks=depth.shape)[...] = depth


def npz_shapes(path: str | Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{name: (shape, dtype)}`` of the arrays in an ``.npz``, from their headers (nothing inflated)."""
    import zipfile

    out = {}
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            with zf.open(name) as fh:
                fmt = np.lib.format
                version = fmt.read_magic(fh)
                read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                shape, _, dtype = read_header(fh)
            out[name[:-4] if name.endswith(".npy") else name] = (tuple(shape), np.dtype(dtype))
    return out


def read_stack_npz(path: str | Path) -> StackArrays:
    """Read an ``.npz`` stack written by :func:`write_stack` (no pickle).

    The arrays' sizes are read from their headers and checked against the memory budget first,
    so a small compressed file that declares huge arrays is refused before it is inflated.
    """
    from .budget import check_memory

    path = Path(path)
    try:
        shapes = npz_shapes(path)
        missing = [k for k in ("amplitude", "z_um", "dx_um") if k not in shapes]
        if missing:
            raise FPMInputError(f"not an fpminr stack: missing array(s) {', '.join(missing)}", path)
        if any(dtype.hasobject for _, dtype in shapes.values()):
            raise FPMInputError("holds Python objects (pickle), which are never loaded", path)
        total = sum(int(np.prod(shape, dtype=np.float64)) * dtype.itemsize for shape, dtype in shapes.values())
        check_memory(total, "reading the stack", path)
        with np.load(path, allow_pickle=False) as f:
            return StackArrays(
                amplitude=f["amplitude"], phase=f["phase"] if "phase" in f.files else None,
                z_um=f["z_um"], dx_um=float(f["dx_um"]),
                depth_um=f["depth_um"] if "depth_um" in f.files else None,
            )
    except FPMInputError:
        raise
    except MemoryError:
        raise FPMInputError("not enough memory to read the stack", path) from None
    except Exception as exc:  # zipfile, numpy's header parser and zlib raise many types
        raise FPMInputError(f"cannot read stack (truncated or corrupt?): {' '.join(str(exc).split())[:160]}",
                            path) from None
