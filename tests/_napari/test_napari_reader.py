"""The npe2 reader: our raw formats open as one image layer; foreign files give None; a damaged
file of ours gives one clear notification and no exception."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import tifffile

from napari_fpminr._napari import _reader
from napari_fpminr._napari._layers import RAW_KEY
from napari_fpminr._napari._reader import get_reader
from napari_fpminr.io import write_raw

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture
def errors(monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr(_reader, "show_error", shown.append)
    return shown


@pytest.mark.parametrize("suffix", [".mat", ".hdf5", ".tif"])
def test_each_raw_format_reads_as_raw_stack(tmp_path, tiny_raw, suffix, errors):
    path = write_raw(tiny_raw, tmp_path / f"set{suffix}")
    reader = get_reader(str(path))
    assert reader is not None
    layers = reader(str(path))
    assert len(layers) == 1
    data, meta, kind = layers[0]
    assert kind == "image" and data.shape == (9, 1, 24, 24)
    raw = meta["metadata"][RAW_KEY]
    np.testing.assert_allclose(np.sort(raw.intensities.ravel()), np.sort(tiny_raw.intensities.ravel()), rtol=1e-6)
    dx = 3.45 / 10
    assert meta["scale"] == pytest.approx((1.0, 1.0, dx, dx))
    assert meta["axis_labels"] == ("LED", "z (µm)", "y", "x")
    assert errors == []


def _foreign_files(tmp: Path) -> list[Path]:
    tif = tmp / "plain.tif"
    tifffile.imwrite(tif, np.zeros((3, 8, 8), np.uint16))          # no sidecar: not ours
    mat = tmp / "other.mat"
    scipy.io.savemat(mat, {"something": np.ones(3)})
    h5 = tmp / "other.h5"
    with h5py.File(h5, "w") as f:
        f["data"] = np.ones(3)
    junk = tmp / "junk.mat"
    junk.write_bytes(b"\x00garbage" * 50)
    empty = tmp / "empty.hdf5"
    empty.write_bytes(b"")
    return [tif, mat, h5, junk, empty, tmp / "missing.mat", tmp]


def test_foreign_files_are_refused_without_raising(tmp_path, errors):
    """Files other readers may claim (TIFF, HDF5) or that do not exist: None, napari moves on.
    A .mat (only this plugin claims the suffix) gets a reader that explains in one line."""
    for path in _foreign_files(tmp_path):
        if path.suffix == ".mat" and path.is_file():
            errors.clear()
            assert get_reader(str(path))(str(path)) == [(None,)]
            assert len(errors) == 1 and "not a recognised FPM raw-data file" in errors[0], errors
            errors.clear()
        else:
            assert get_reader(str(path)) is None, path
            assert errors == []


def test_damaged_files_of_ours_give_one_notification(tmp_path, tiny_raw, errors):
    # native tif whose sidecar lost its wavelength
    tif = write_raw(tiny_raw, tmp_path / "native.tif")
    side = tif.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta.pop("wavelength_um")
    side.write_text(json.dumps(meta))
    # model file that is not a model
    bad_model = tmp_path / "broken.fpminr"
    bad_model.write_bytes(b"not a safetensors file")
    for path in (tif, bad_model):
        errors.clear()
        reader = get_reader(str(path))
        assert reader is not None, path           # ours: the reader takes it ...
        out = reader(str(path))                    # ... and never raises
        assert out == [(None,)]                    # napari's "nothing to add" sentinel
        assert len(errors) == 1 and str(path) in errors[0], errors


def test_missing_wavelength_message_names_the_parameter(tmp_path, tiny_raw, errors):
    tif = write_raw(tiny_raw, tmp_path / "native.tif")
    side = tif.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta.pop("wavelength_um")
    side.write_text(json.dumps(meta))
    get_reader(str(tif))(str(tif))
    assert len(errors) == 1
    assert "wavelength" in errors[0] and "Traceback" not in errors[0]


@pytest.mark.skipif(not (DATA / "bloodsmear_green.mat").is_file(), reason="shared/data not present")
def test_real_uconn_file_opens(errors):
    path = str(DATA / "bloodsmear_green.mat")
    layers = get_reader(path)(path)
    data, meta, _ = layers[0]
    assert data.shape == (225, 1, 128, 128)
    raw = meta["metadata"][RAW_KEY]
    assert raw.z_um == pytest.approx(10.0)
    assert meta["scale"][-1] == pytest.approx(1.845, rel=1e-3)
    assert errors == []
