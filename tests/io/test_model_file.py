"""``.fpminr`` files: exact round trip, info text, atomic writes, clear errors for bad files."""

import json
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from napari_fpminr.errors import FPMInputError
from napari_fpminr.io.model_file import load_model, model_info, read_header, save_model
from napari_fpminr.optics import Optics
from napari_fpminr.recon.inr import FPMINR, INRArchitecture
from napari_fpminr.recon.model import Model


def make_model(pupil=False, seed=0):
    na = np.stack(np.meshgrid(np.linspace(-0.2, 0.2, 3), np.linspace(-0.2, 0.2, 3)), -1).reshape(-1, 2)
    lr = (12, 10)
    p = None
    if pupil:
        rng = np.random.default_rng(seed)
        p = np.exp(1j * rng.uniform(-1, 1, lr)).astype(np.complex64)
    optics = Optics(wavelength_um=0.52, na_obj=0.25, mag=10, pixel_um=3.45, na_illum=na, upsample=2, pupil=p)
    arch = INRArchitecture((24, 20), -6.0, 4.0, n_z=5, q=8)
    net = FPMINR(arch, seed=seed)
    with torch.no_grad():
        for prm in net.parameters():
            prm.add_(0.1 * torch.randn(prm.shape))
    return Model(net, optics, lr, {"training": {"epochs_done": 3, "steps": 30, "elapsed_s": 1.5, "device": "cpu",
                                                "final_loss": 0.01, "stopped": False},
                                   "source_hash": "ab" * 32})


def test_round_trip_renders_identically_and_keeps_everything(tmp_path):
    model = make_model(pupil=True)
    model.net.round_planes_to_storage_()  # what training hands over (feature planes stored as float16)
    path = save_model(model, tmp_path / "m.fpminr")
    loaded = load_model(path)
    z = [-6.0, -1.3, 4.0]
    for got, want in zip(loaded.render(z), model.render(z)):
        np.testing.assert_array_equal(got, want)
    assert loaded.model_id == model.model_id
    assert (loaded.z_min_um, loaded.z_max_um, loaded.hr_shape) == (-6.0, 4.0, (24, 20))
    np.testing.assert_array_equal(loaded.optics.pupil, model.optics.pupil)
    np.testing.assert_array_equal(loaded.optics.na_illum, model.optics.na_illum)
    assert loaded.optics.wavelength_um == 0.52 and loaded.meta["source_hash"] == "ab" * 32
    # the file is safetensors + JSON: the header is plain JSON a foreign tool can read
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    assert json.loads(header["__metadata__"]["fpminr"])["format_version"] == 1
    assert "amplitude.plane" in header and "optics.pupil" in header


def test_half_precision_planes_halve_the_file_and_barely_change_the_slices(tmp_path):
    """The feature planes (the bulk) are stored as float16: the file is about half the float32
    size, and the decoded slices of an unrounded model change by far less than any reconstruction
    error (relative change < 1e-3, i.e. > 60 dB)."""
    model = make_model()
    z = [-6.0, 0.7, 4.0]
    before = model.render(z)
    path = save_model(model, tmp_path / "m.fpminr")
    loaded = load_model(path)
    for got, want in zip(loaded.render(z), before):
        rel = np.linalg.norm(got - want) / np.linalg.norm(want)
        assert 0 < rel < 1e-3, rel
    plane_bytes = sum(p.numel() for n, p in model.net.named_parameters() if n.endswith("plane")) * 4
    full_bytes = model.n_parameters * 4
    size = path.stat().st_size
    assert size < full_bytes - plane_bytes / 2 + 16_000  # float16 planes + float32 rest + JSON header


def test_model_id_changes_when_parameters_change():
    model = make_model()
    before = model.model_id
    assert model.model_id == before
    with torch.no_grad():
        model.net.phase.b3.add_(1e-3)
    assert model.model_id != before


def test_info_reports_optics_range_parameters_and_compression(tmp_path):
    model = make_model()
    path = save_model(model, tmp_path / "m.fpminr")
    text = model_info(path)
    size = path.stat().st_size
    ratio = 161 * 2 * 24 * 20 * 4 / size
    assert "-6 .. 4 um" in text and f"{model.n_parameters:,}" in text
    assert "0.5200 um" in text and f"compression {ratio:.1f}x" in text


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    model = make_model()
    path = save_model(model, tmp_path / "m.fpminr")
    good = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("napari_fpminr.io.model_file.save_file", boom)
    with pytest.raises(OSError):
        save_model(make_model(seed=5), path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["m.fpminr"]


def test_bad_files_raise_input_errors_naming_the_file(tmp_path):
    model = make_model()
    path = save_model(model, tmp_path / "m.fpminr")
    data = path.read_bytes()

    truncated = tmp_path / "truncated.fpminr"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.fpminr"
    garbage.write_bytes(b"this is not a model")
    missing = tmp_path / "missing.fpminr"
    tensors = {k: v for k, v in model.net.state_dict().items() if k != "phase.w2"}
    header = json.loads(read_header(path) and json.dumps(read_header(path)))
    save_file(tensors, str(missing), metadata={"fpminr": json.dumps(header)})
    future = tmp_path / "future.fpminr"
    save_file(dict(model.net.state_dict()), str(future), metadata={"fpminr": json.dumps(dict(header, format_version=99))})
    foreign = tmp_path / "foreign.fpminr"
    save_file({"x": torch.zeros(3)}, str(foreign))

    for bad, words in [(truncated, "truncated"), (garbage, "not a readable"), (missing, "phase.w2"),
                       (future, "version 99"), (foreign, "not an FPM-INR model"),
                       (tmp_path / "absent.fpminr", "not found")]:
        with pytest.raises(FPMInputError) as err:
            load_model(bad)
        assert bad.name in str(err.value) and words in str(err.value), str(err.value)
        assert "\n" not in str(err.value)
