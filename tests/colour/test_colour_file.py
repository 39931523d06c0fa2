"""Colour model files and colour stack outputs: round trip, registration applied, hostile files."""

import json

import numpy as np
import pytest
import torch

from napari_fpminr.colour.file import colour_model_info, is_colour_model, load_colour_model, save_colour_model
from napari_fpminr.colour.model import CHANNELS, ColourModel
from napari_fpminr.colour.outputs import write_colour_stack
from napari_fpminr.colour.register import fourier_shift
from napari_fpminr.errors import FPMInputError
from napari_fpminr.io.model_file import load_model
from napari_fpminr.recon.lowrank import LowRankField
from napari_fpminr.recon.model import Model


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


def _wide_channel(m: Model, seed: int) -> Model:
    """Channel ``m`` with a 17-node, rank-6 field whose terms fall off like a refocused stack's
    (singular values 0, -18, -28, -36, -44, -52 dB of the first), compacted: weak terms in 16 bits."""
    g = torch.Generator().manual_seed(seed)
    net = LowRankField(type(m.arch)(**{**m.arch.__dict__, "n_z": 17, "rank": 6}))
    k = net.index.numel()
    lines = torch.cat([torch.ones(17, 1), torch.randn(17, 5, generator=g)], 1).to(torch.complex128)
    q, _ = torch.linalg.qr(lines)
    v, _ = torch.linalg.qr(torch.complex(torch.randn(k, 6, generator=g), torch.randn(k, 6, generator=g)).to(torch.complex128))
    sigma = torch.tensor([10 ** (-d / 20) for d in (0, 18, 28, 36, 44, 52)], dtype=torch.float64)
    with torch.no_grad():
        net.coefficients.copy_(torch.view_as_real((sigma[:, None] * v.t()).to(torch.complex64)).permute(2, 0, 1))
        net.z_line.copy_(torch.view_as_real((q * 17 ** 0.5).to(torch.complex64)).permute(2, 0, 1))
    return Model(net, m.optics, m.lr_shape, dict(m.meta))


def test_colour_model_with_log_polar_terms_round_trips_bit_identically(colour_model, tmp_path):
    wide = ColourModel(tuple(_wide_channel(m, c) for c, m in enumerate(colour_model.channels)),
                       colour_model.registration, {}).compacted()
    assert all(m.arch.coarse_terms >= 2 for m in wide.channels), [r["encodings"] for r in wide.meta["compaction"]]
    assert all(r["stored_change_db"] <= -60.0 for r in wide.meta["compaction"])
    path = save_colour_model(wide, tmp_path / "wide.fpminr")
    back = load_colour_model(path)
    for a, b in zip(wide.channels, back.channels, strict=True):
        assert a.arch == b.arch and torch.equal(a.net.coefficients, b.net.coefficients)
    np.testing.assert_array_equal(back.render([-1.0, 0.4]).transmittance, wide.render([-1.0, 0.4]).transmittance)
    assert "colour format version 2" in colour_model_info(path)


def test_a_colour_format_1_file_still_loads(colour_model, tmp_path):
    """Colour files written before the per-term codes (version 1: every channel's terms float16, no
    ``coarse_terms`` in the architectures) load as they were written."""
    from safetensors.torch import save_file

    path = save_colour_model(colour_model, tmp_path / "new.fpminr")
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    meta = json.loads(json.loads(data[8:8 + n])["__metadata__"]["fpminr"])
    for ch in meta["channels"]:
        del ch["architecture"]["coarse_terms"]
    meta["format_version"] = 1
    tensors = {}
    for name, m in zip(CHANNELS, colour_model.channels, strict=True):
        coef = m.net.coefficients.detach()
        scale = coef.abs().amax(dim=(0, 2))  # the version-1 layout: every term float16 relative to its peak part
        tensors.update({f"{name}/lowrank.coefficients": (coef / scale[None, :, None]).to(torch.float16),
                        f"{name}/lowrank.coefficient_scale": scale.contiguous(),
                        f"{name}/lowrank.z_line": m.net.z_line.detach().clone()})
    old = tmp_path / "v1.fpminr"
    save_file(tensors, str(old), metadata={"fpminr": json.dumps(meta)})
    back, now = load_colour_model(old), load_colour_model(path)
    assert all(m.arch.coarse_terms == 0 for m in back.channels)
    np.testing.assert_array_equal(back.render([0.3]).transmittance, now.render([0.3]).transmittance)
    assert "colour format version 1" in colour_model_info(old)


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
