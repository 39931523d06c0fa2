"""Hostile raw files (issue 10): each is refused with one line naming the file, or read without
touching what it need not touch; nothing allocates more than the file's own data justifies."""

import json
import tracemalloc
import warnings
import zlib

import h5py
import numpy as np
import pytest
import scipy.io
import tifffile
from io_cases import make_raw, write_mat73

from napari_fpminr.errors import FPMInputError
from napari_fpminr.io import read_raw, write_raw
from napari_fpminr.io.budget import limits, parse_size


def expect_error(path, *fragments, name=None, **kwargs):
    with pytest.raises(FPMInputError) as err:
        read_raw(path, **kwargs)
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 400, msg
    assert (name or path.name) in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


def peak_bytes(fn, *args, **kwargs):
    """Peak Python/numpy allocation while ``fn`` runs (numpy reports its buffers to tracemalloc)."""
    tracemalloc.start()
    try:
        try:
            fn(*args, **kwargs)
        except FPMInputError:
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ---- PtyLab: only the datasets needed, lazily; no external links -------------------------
def test_ptylab_ignores_an_unrelated_huge_dataset(tmp_path):
    path = tmp_path / "p.hdf5"
    write_raw(make_raw(), path)
    with h5py.File(path, "r+") as f:  # 48 x 2048 x 2048 float32 = 768 MiB when read, ~0 bytes on disk
        f.create_dataset("unrelated", shape=(48, 2048, 2048), dtype="f4", chunks=(1, 256, 256))
    assert path.stat().st_size < 200_000
    assert peak_bytes(read_raw, path) < 50 << 20
    assert read_raw(path).n_leds == 6


def test_ptylab_unrelated_broken_external_link_does_not_break_a_valid_file(tmp_path):
    path = tmp_path / "p.hdf5"
    write_raw(make_raw(), path)
    with h5py.File(path, "r+") as f:
        f["elsewhere"] = h5py.ExternalLink("/nonexistent/other.h5", "/data")
    assert read_raw(path).n_leds == 6


def test_ptylab_external_link_is_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    with h5py.File(outside / "secret.h5", "w") as f:
        f["data"] = make_raw().intensities
    path = tmp_path / "p.hdf5"
    write_raw(make_raw(), path)
    with h5py.File(path, "r+") as f:
        del f["ptychogram"]
        f["ptychogram"] = h5py.ExternalLink(str(outside / "secret.h5"), "/data")
    expect_error(path, "external link", "not followed")


def test_mat73_external_link_is_never_followed(tmp_path):
    raw = make_raw()
    v = {"I_low": np.moveaxis(raw.intensities, 0, -1), "na_calib": raw.optics.na_illum, "na_cal": 0.25,
         "mag": 10.0, "dpix_c": 3.45, "lambda": 0.5}
    path = tmp_path / "d.mat"
    write_mat73(path, v)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.ones((1, 1))
    with h5py.File(path, "r+") as f:
        del f["lambda"]
        f["lambda"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/x")
    expect_error(path, "external link")


def test_ptylab_scalar_declared_huge_is_refused_before_reading(tmp_path):
    path = tmp_path / "p.hdf5"
    write_raw(make_raw(), path)
    with h5py.File(path, "r+") as f:
        del f["zled"]
        f.create_dataset("zled", shape=(20000, 20000), dtype="f8", chunks=(100, 100))
    assert peak_bytes(read_raw, path) < 50 << 20
    expect_error(path, "zled", "expected a few numbers")


# ---- compressed .mat that expands beyond memory -----------------------------------------
def _compressed_mat_bomb(path, shape=(512, 512, 512)):
    """An FPM-INR .mat whose compressed variable I_low (uint8 zeros) expands to prod(shape) bytes."""
    name = b"I_low"
    n = int(np.prod(shape))
    body = b""
    body += np.array([6, 8], "<u4").tobytes() + np.array([9, 0], "<u4").tobytes()  # flags: uint8 class
    dims = np.array(shape, "<i4").tobytes()
    body += np.array([5, len(dims)], "<u4").tobytes() + dims + b"\0" * ((-len(dims)) % 8)
    body += np.array([1, len(name)], "<u4").tobytes() + name + b"\0" * ((-len(name)) % 8)
    body += np.array([2, n], "<u4").tobytes()  # miUINT8 data
    header = np.array([14, len(body) + n + (-n) % 8], "<u4").tobytes()
    comp = zlib.compressobj(9)
    chunks = [comp.compress(header + body)]
    zeros = bytes(1 << 20)
    left = n + (-n) % 8
    while left:
        step = min(left, len(zeros))
        chunks.append(comp.compress(zeros[:step]))
        left -= step
    chunks.append(comp.flush())
    data = b"".join(chunks)
    c = np.linspace(-0.2, 0.2, int(np.ceil(np.sqrt(shape[2]))))
    na = np.stack(np.meshgrid(c, c), -1).reshape(-1, 2)[: shape[2]]
    scipy.io.savemat(path, {"na_calib": na, "na_cal": 0.25, "mag": 10.0, "dpix_c": 3.45, "lambda": 0.5})
    with open(path, "ab") as fh:
        fh.write(np.array([15, len(data)], "<u4").tobytes() + data)


def test_compressed_mat_bomb_is_refused_before_decompressing(tmp_path):
    path = tmp_path / "bomb.mat"
    _compressed_mat_bomb(path)  # 128 MiB of uint8 zeros in ~130 kB
    assert path.stat().st_size < 1 << 20
    with limits(max_memory=parse_size("64M")):
        assert peak_bytes(read_raw, path) < 16 << 20
        expect_error(path, "I_low", "needs about", "--max-memory")


# ---- implausible parameters, from the file or the command line ---------------------------
@pytest.mark.parametrize("suffix", [".mat", ".hdf5", ".tif"])
def test_huge_stored_upsample_is_refused_on_reading(tmp_path, suffix):
    path = tmp_path / f"u{suffix}"
    raw = make_raw()
    write_raw(raw.with_optics(upsample=100000), path)
    expect_error(path, "upsample 100000", name=path.name)


def test_huge_upsample_override_is_refused(tmp_path):
    write_raw(make_raw(), tmp_path / "d.mat")
    expect_error(tmp_path / "d.mat", "upsample 100000", upsample=100000)


def test_wavelength_in_nm_is_refused(tmp_path):
    write_raw(make_raw(), tmp_path / "d.mat")
    expect_error(tmp_path / "d.mat", "wavelength 512.6 um is implausible", wavelength_um=512.6)


def test_one_led_data_are_refused(tmp_path):
    write_raw(make_raw(n_leds=1), tmp_path / "one.tif")
    expect_error(tmp_path / "one.tif", "only 1 image")


@pytest.mark.parametrize("dtype", [np.bool_, np.int8])
def test_bool_and_int8_intensities_are_refused(tmp_path, dtype):
    raw = make_raw()
    v = {"I_low": (np.moveaxis(raw.intensities, 0, -1) > 1).astype(dtype), "na_calib": raw.optics.na_illum,
         "na_cal": 0.25, "mag": 10.0, "dpix_c": 3.45, "lambda": 0.5}
    scipy.io.savemat(tmp_path / "b.mat", v)
    expect_error(tmp_path / "b.mat", "data type", "camera intensities")
    write_raw(raw, tmp_path / "b.tif")
    tifffile.imwrite(tmp_path / "b.tif", (raw.intensities > 1).astype(dtype))
    expect_error(tmp_path / "b.tif", "data type")


def test_duplicated_leds_warn(tmp_path):
    raw = make_raw()
    na = raw.optics.na_illum.copy()
    na[3] = na[2]
    write_raw(raw.with_optics(na_illum=na), tmp_path / "dup.mat")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_raw(tmp_path / "dup.mat").n_leds == 6
    assert any("duplicated LEDs" in str(w.message) and "dup.mat" in str(w.message) for w in caught)


# ---- native sidecar -----------------------------------------------------------------------
def _sidecar(tmp_path, change):
    write_raw(make_raw(n_leds=9), tmp_path / "s.tif")
    meta = json.loads((tmp_path / "s.json").read_text())
    del meta["na_x"], meta["na_y"]
    meta["led_grid"] = {"grid_size": 3, "pitch_mm": 4.0, "distance_mm": 90.0}
    change(meta)
    return meta


@pytest.mark.parametrize("value", ["Infinity", "100000", "1e300", "2.5", "[3, -1]", "\"3\""])
def test_sidecar_grid_size_out_of_range(tmp_path, value):
    meta = _sidecar(tmp_path, lambda m: None)
    text = json.dumps(meta).replace('"grid_size": 3', f'"grid_size": {value}')
    (tmp_path / "s.json").write_text(text)
    expect_error(tmp_path / "s.tif", "grid_size", name="s.json")


def test_sidecar_with_a_valid_grid_reads(tmp_path):
    meta = _sidecar(tmp_path, lambda m: None)
    (tmp_path / "s.json").write_text(json.dumps(meta))
    assert read_raw(tmp_path / "s.tif").n_leds == 9


def test_deeply_nested_sidecar(tmp_path):
    write_raw(make_raw(), tmp_path / "s.tif")
    (tmp_path / "s.json").write_text('{"x": ' + "[" * 100000 + "]" * 100000 + "}")
    expect_error(tmp_path / "s.tif", "nested too deeply", name="s.json")


def test_huge_sidecar_is_not_read(tmp_path):
    write_raw(make_raw(), tmp_path / "s.tif")
    with open(tmp_path / "s.json", "wb") as fh:
        fh.truncate(65 << 20)  # sparse: 65 MiB of nothing
    expect_error(tmp_path / "s.tif", "sidecar holds a few parameters", name="s.json")


# ---- truncated inside the header ----------------------------------------------------------
def test_mat_truncated_inside_its_header_says_truncated(tmp_path):
    write_raw(make_raw(), tmp_path / "d.mat")
    data = (tmp_path / "d.mat").read_bytes()
    (tmp_path / "t.mat").write_bytes(data[:100])
    expect_error(tmp_path / "t.mat", "truncated", "128-byte header")


# ---- stack files read back (fpminr info x.npz) ----------------------------------------------
def test_compressed_npz_stack_is_checked_before_inflating(tmp_path):
    from napari_fpminr.io.stack_files import read_stack_npz

    path = tmp_path / "big.npz"
    np.savez_compressed(path, amplitude=np.zeros((64, 512, 512), np.float32), z_um=np.zeros(64), dx_um=0.1)
    assert path.stat().st_size < 1 << 20
    with limits(max_memory=parse_size("16M")):
        assert peak_bytes(read_stack_npz, path) < 4 << 20
        with pytest.raises(FPMInputError, match="big.npz: reading the stack needs about 64.0 MiB"):
            read_stack_npz(path)


def test_npz_with_objects_is_refused_without_unpickling(tmp_path):
    from napari_fpminr.io.stack_files import read_stack_npz

    path = tmp_path / "obj.npz"
    np.savez(path, amplitude=np.zeros((1, 2, 2), np.float32), z_um=np.zeros(1), dx_um=0.1,
             extra=np.array([{"a": 1}], dtype=object))
    with pytest.raises(FPMInputError, match="obj.npz: holds Python objects"):
        read_stack_npz(path)


@pytest.mark.parametrize("box", [(-2, 0, 4, 4), (0, -1, 4, 4), (0, 0, 9, 4), (6, 0, 4, 4), (0, 0, 0, 4)])
def test_crop_outside_the_images_is_refused(box):
    with pytest.raises(FPMInputError, match="is not inside the 8x10 px images"):
        make_raw().crop(*box)
    assert make_raw().crop(4, 6, 4, 4).lr_shape == (4, 4)
