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
    g = torch.Generator().manual_seed(1000 + seed)  # deterministic: the tests' tolerances hold for every run
    with torch.no_grad():
        for prm in net.parameters():
            prm.add_(0.1 * torch.randn(prm.shape, generator=g))
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
    assert json.loads(header["__metadata__"]["fpminr"])["format_version"] == 3
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


# ---- format versions 2-3: the low-rank field, version 1 files, hostile headers ------------------
def make_lowrank_model(seed=0):
    from napari_fpminr.recon.lowrank import LowRankArchitecture, LowRankField

    base = make_model(seed=seed)
    arch = LowRankArchitecture.for_optics(base.optics, base.lr_shape, -6.0, 4.0, n_z=6, rank=3)
    net = LowRankField(arch)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net.coefficients.copy_(torch.randn(net.coefficients.shape, generator=g))
        net.z_line.copy_(torch.randn(net.z_line.shape, generator=g))
    net.round_to_storage_()
    return Model(net, base.optics, base.lr_shape, base.meta)


def test_low_rank_model_round_trips_exactly_and_is_small(tmp_path):
    model = make_lowrank_model()
    path = save_model(model, tmp_path / "lr.fpminr")
    loaded = load_model(path)
    assert loaded.representation == "lowrank" and loaded.model_id == model.model_id
    z = [-6.0, -1.3, 0.7, 4.0]
    for a, b in zip(model.render(z), loaded.render(z)):
        np.testing.assert_array_equal(a, b)
    assert "low-rank field, rank 3" in model_info(path) and "format version 3" in model_info(path)


def test_low_rank_slices_are_band_limited_to_the_synthetic_aperture():
    model = make_lowrank_model()
    field = model.field([0.5])[0]
    spec = np.fft.fft2(field)
    fy = np.fft.fftfreq(field.shape[0], model.dx_hr_um)[:, None]
    fx = np.fft.fftfreq(field.shape[1], model.dx_hr_um)[None, :]
    outside = np.hypot(fy, fx) > model.arch.aperture_cycles_per_um + 1e-9
    assert outside.any() and np.abs(spec[outside]).max() < 1e-4 * np.abs(spec).max()


def test_version_1_files_still_load(tmp_path):
    """Files written before the seeded pipeline (format 1: MLP tensors, no 'representation') load."""
    model = make_model()
    model.net.round_planes_to_storage_()
    path = save_model(model, tmp_path / "new.fpminr")
    header = read_header(path)
    old = tmp_path / "v1.fpminr"
    v1 = {k: v for k, v in header.items() if k != "representation"}
    save_file(model.net.storage_tensors(), str(old), metadata={"fpminr": json.dumps(dict(v1, format_version=1))})
    loaded = load_model(old)
    assert loaded.representation == "mlp"
    np.testing.assert_array_equal(loaded.render([0.0])[0], model.render([0.0])[0])


@pytest.mark.parametrize("change", ["huge_grid", "huge_nz", "huge_rank", "wrong_dtype"])
def test_hostile_header_is_refused_before_anything_is_allocated(tmp_path, change):
    """A small file whose JSON claims a huge architecture (or mislabelled tensors) is refused from
    the shapes in the safetensors header: one line, no allocation beyond the tensors."""
    import resource

    model = make_lowrank_model()
    path = save_model(model, tmp_path / "m.fpminr")
    header = read_header(path)
    tensors = {f"lowrank.{k}": v for k, v in model.net.storage_tensors().items()}
    arch = dict(header["architecture"])
    if change == "huge_grid":
        arch["hr_shape"] = [20000, 20000]
        header["lr_shape"] = [10000, 10000]
    elif change == "huge_nz":
        arch["n_z"] = 10 ** 9
    elif change == "huge_rank":
        arch["rank"] = 10 ** 6
    else:
        tensors["lowrank.z_line"] = tensors["lowrank.z_line"].to(torch.float16)
    bad = tmp_path / "bad.fpminr"
    save_file(tensors, str(bad), metadata={"fpminr": json.dumps(dict(header, architecture=arch))})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(FPMInputError) as err:
        load_model(bad)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert bad.name in str(err.value) and "\n" not in str(err.value)
    assert grown_mb < 200, grown_mb


def test_low_rank_decode_of_regions_and_steps_equals_the_full_field():
    model = make_lowrank_model(seed=3)
    z = [-2.5, 1.0]
    full = model.field(z)
    net = model.net
    direct = net.field(torch.tensor(z)).detach().numpy()
    np.testing.assert_allclose(full, direct, atol=1e-5)
    amp, phase = model.render(z, region=(3, 2, 15, 11), step=2)
    np.testing.assert_allclose(amp, np.abs(direct[:, 3:18:2, 2:13:2]), atol=1e-5)
    ph = np.angle(direct[:, 3:18:2, 2:13:2])
    np.testing.assert_allclose(np.angle(np.exp(1j * (phase - ph))), 0, atol=1e-4)


def test_deeply_nested_metadata_is_one_clear_error(tmp_path):
    model = make_lowrank_model()
    path = save_model(model, tmp_path / "m.fpminr")
    header = read_header(path)
    nested = "[" * 100_000 + "]" * 100_000
    text = json.dumps(header)[:-1] + ', "junk": ' + nested + "}"
    bad = tmp_path / "nested.fpminr"
    save_file({f"lowrank.{k}": v for k, v in model.net.storage_tensors().items()}, str(bad), metadata={"fpminr": text})
    with pytest.raises(FPMInputError, match="nested too deeply") as err:
        load_model(bad)
    assert bad.name in str(err.value)
