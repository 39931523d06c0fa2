"""Small synthetic raw data sets and MATLAB v7.3 writing for the raw-data I/O tests."""

import h5py
import numpy as np

from napari_fpminr.io import RawData
from napari_fpminr.optics import Optics


def make_raw(n_leds=6, h=8, w=10, seed=0, pupil=False, z_um=3.5) -> RawData:
    """Non-square images (h != w) so that any transposition is caught."""
    rng = np.random.default_rng(seed)
    na = rng.uniform(-0.3, 0.3, size=(n_leds, 2))
    na[0] = (0.01, -0.02)
    pup = None
    if pupil:
        pup = (np.exp(1j * rng.uniform(-1, 1, size=(h, w)))).astype(np.complex64)
    optics = Optics(wavelength_um=0.5126, na_obj=0.25, mag=10.0, pixel_um=3.45, na_illum=na, upsample=0,
                    pupil=pup)
    images = rng.uniform(0.0, 2.0, size=(n_leds, h, w)).astype(np.float32)
    return RawData(images, optics, z_um=z_um)


def write_mat73(path, variables: dict) -> None:
    """Write ``variables`` (MATLAB-ordered numpy arrays) the way MATLAB -v7.3 does.

    HDF5 with a 512-byte user block carrying the MATLAB header, every array stored with its axes
    reversed (MATLAB is column-major), scalars as 1x1 arrays, complex as a (real, imag) compound.
    """
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            arr = np.asarray(value)
            if arr.ndim < 2:
                arr = arr.reshape(1, -1) if arr.ndim == 1 else arr.reshape(1, 1)
            arr = arr.T
            if np.iscomplexobj(arr):
                comp = np.empty(arr.shape, dtype=[("real", "<f8"), ("imag", "<f8")])
                comp["real"], comp["imag"] = arr.real, arr.imag
                arr = comp
            f.create_dataset(name, data=np.ascontiguousarray(arr))
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")
