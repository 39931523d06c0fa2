"""Stack writers: every format round-trips the data and its physical metadata; writes are atomic."""

import json

import numpy as np
import pytest

from napari_fpminr.errors import FPMInputError
from napari_fpminr.io.stack_files import StackArrays, read_stack_npz, write_stack


@pytest.fixture
def stack():
    rng = np.random.default_rng(0)
    return StackArrays(
        amplitude=rng.random((5, 12, 10), dtype=np.float32),
        phase=rng.standard_normal((5, 12, 10)).astype(np.float32),
        z_um=np.linspace(-2.0, 2.0, 5),
        dx_um=0.1725,
    )


def test_npz_round_trip(tmp_path, stack):
    path = write_stack(tmp_path / "s.npz", stack)
    back = read_stack_npz(path)
    np.testing.assert_array_equal(back.amplitude, stack.amplitude)
    np.testing.assert_array_equal(back.phase, stack.phase)
    np.testing.assert_allclose(back.z_um, stack.z_um)
    assert back.dx_um == pytest.approx(stack.dx_um)


def test_imagej_tif_has_z_spacing_and_pixel_size(tmp_path, stack):
    import tifffile

    path = write_stack(tmp_path / "s.tif", stack)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        meta = tif.imagej_metadata
        data = tif.asarray()
        x_res = tif.pages[0].tags["XResolution"].value
    assert data.shape == (5, 2, 12, 10)
    np.testing.assert_array_equal(data[:, 0], stack.amplitude)
    np.testing.assert_array_equal(data[:, 1], stack.phase)
    assert meta["spacing"] == pytest.approx(1.0)
    assert meta["unit"] == "um"
    assert x_res[1] / x_res[0] == pytest.approx(stack.dx_um, rel=1e-5)


def test_ome_zarr_has_units_scale_and_translation(tmp_path, stack):
    import zarr

    path = write_stack(tmp_path / "s.zarr", stack)
    root = zarr.open_group(str(path), mode="r")
    ms = root.attrs["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["z", "c", "y", "x"]
    scale, translation = ms["datasets"][0]["coordinateTransformations"]
    assert scale["scale"] == pytest.approx([1.0, 1.0, stack.dx_um, stack.dx_um])
    assert translation["translation"][0] == pytest.approx(-2.0)
    np.testing.assert_array_equal(root["0"][:, 1], stack.phase)
    json.dumps(dict(root.attrs))  # metadata is plain JSON


def test_failed_write_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, stack):
    target = tmp_path / "s.npz"
    write_stack(target, stack)
    before = target.read_bytes()
    bad = StackArrays(amplitude=stack.amplitude, phase=stack.phase[:2], z_um=stack.z_um, dx_um=1.0)
    with pytest.raises(FPMInputError, match="phase shape"):
        write_stack(target, bad)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]


def test_interrupted_write_removes_its_temp_file(tmp_path, stack, monkeypatch):
    import napari_fpminr.io.stack_files as sf

    def explode(tmp, s):
        tmp.write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(sf, "_write_npz", explode)
    with pytest.raises(FPMInputError, match="s.npz: cannot write: .*disk full"):  # one line, names the file
        write_stack(tmp_path / "s.npz", stack)
    assert not list(tmp_path.iterdir())


def test_unknown_suffix_is_a_clear_error(tmp_path, stack):
    with pytest.raises(FPMInputError, match=r"unknown output format '\.png'"):
        write_stack(tmp_path / "s.png", stack)
    assert not list(tmp_path.iterdir())


def test_reading_a_foreign_npz_names_the_missing_arrays(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, image=np.zeros(3))
    with pytest.raises(FPMInputError, match="other.npz: not an fpminr stack: missing array"):
        read_stack_npz(path)


@pytest.mark.parametrize("name", ["s.npz", "s.tif", "s.zarr"])
def test_written_files_get_ordinary_permissions(tmp_path, stack, name):
    """Atomic writes go through 0600 temp files; the result must still be readable by others."""
    import os
    import stat

    mask = os.umask(0o022)
    os.umask(mask)
    path = write_stack(tmp_path / name, stack)
    target = next(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else path
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    if path.is_dir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~mask
