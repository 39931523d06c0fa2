"""Colour model files and colour stack outputs: round trip, registration applied, hostile files."""

import json

import numpy as np
import pytest
import torch

from napari_fpminr.colour.file import is_colour_model, load_colour_model, save_colour_model
from napari_fpminr.colour.outputs import write_colour_stack
from napari_fpminr.colour.register import fourier_shift
from napari_fpminr.errors import FPMInputError
from napari_fpminr.io.model_file import load_model


def test_registration_is_applied_when_decoding(colour_model):
    m = colour_model
    assert m.z_range_um == (-3.0, 3.0)
    s = m.render([0.5], parts=("transmittance", "amplitude", "phase"))
    for c in range(3):
        reg = m.registration[c]
        amp, pha = m.channels[c].render([0.5 + reg.z_offset_um])  # the channel at its own depth
        own = torch.polar(torch.as_tensor(amp[0]), torch.as_tensor(pha[0]))
        expected = fourier_shift(own, -reg.shift_px[0], -reg.shift_px[1]).numpy()
        assert np.allclose(s.amplitude[0, c], np.abs(expected) / np.sqrt(reg.white), atol=2e-4)
        assert np.allclose(s.transmittance[0, c], np.abs(expected) ** 2 / reg.white, atol=2e-4)
    assert s.rgb.shape == (1, *m.hr_shape, 3) and s.rgb.dtype == np.uint8
    with pytest.raises(ValueError, match="outside"):
        m.render([3.5])


def test_colour_model_file_round_trip(colour_model, tmp_path):
    path = save_colour_model(colour_model, tmp_path / "c.fpminr")
    assert is_colour_model(path)
    back = load_colour_model(path)
    assert [r.to_dict() for r in back.registration] == [r.to_dict() for r in colour_model.registration]
    a = colour_model.render([-1.0, 2.0]).transmittance
    b = back.render([-1.0, 2.0]).transmittance
    assert np.abs(a - b).max() < 2e-3 * np.abs(a).max()  # float16 coefficients
    with pytest.raises(FPMInputError, match="colour model"):  # the single-model reader says what it is
        load_model(path)


def test_damaged_colour_files_name_the_file(colour_model, tmp_path):
    path = save_colour_model(colour_model, tmp_path / "c.fpminr")
    cut = tmp_path / "cut.fpminr"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(FPMInputError, match="cut.fpminr"):
        load_colour_model(cut)
    # a header claiming another version
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    meta = json.loads(header["__metadata__"]["fpminr"])
    meta["format_version"] = 99
    header["__metadata__"]["fpminr"] = json.dumps(meta)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    bad = tmp_path / "v99.fpminr"
    bad.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n:])
    with pytest.raises(FPMInputError, match="version 99"):
        load_colour_model(bad)
    assert not is_colour_model(tmp_path / "missing.fpminr")


def test_colour_stack_outputs(colour_model, tmp_path):
    import tifffile
    import zarr

    z = np.array([-1.0, 0.0, 1.0])
    s = colour_model.render(z, parts=("transmittance", "amplitude", "phase"))
    H, W = colour_model.hr_shape
    npz = np.load(write_colour_stack(tmp_path / "o.npz", s, z, colour_model.dx_hr_um), allow_pickle=False)
    assert npz["transmittance"].shape == (3, 3, H, W) and npz["transmittance"].dtype == np.float32
    assert npz["rgb"].shape == (3, H, W, 3) and npz["rgb"].dtype == np.uint8
    assert npz["amplitude"].shape == npz["phase"].shape == (3, 3, H, W)
    assert np.allclose(npz["z_um"], z) and float(npz["dx_um"]) == pytest.approx(colour_model.dx_hr_um)
    with tifffile.TiffFile(write_colour_stack(tmp_path / "o.tif", s, z, colour_model.dx_hr_um)) as tif:
        assert tif.is_imagej and tif.series[0].shape == (3, H, W, 3)
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.RGB
    root = zarr.open_group(str(write_colour_stack(tmp_path / "o.zarr", s, z, colour_model.dx_hr_um)), mode="r")
    assert root["0"].shape == (3, 3, H, W)
    channels = root.attrs["omero"]["channels"]
    assert [c["color"] for c in channels] == ["FF0000", "00FF00", "0000FF"]
    assert all(c["window"]["start"] == 0 and c["window"]["end"] == 1 for c in channels)
    assert [a["name"] for a in root.attrs["multiscales"][0]["axes"]] == ["z", "c", "y", "x"]
