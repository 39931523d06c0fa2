"""Rate allocation of a compacted low-rank field: each term stored as float16 real/imag or in the 16-bit
log-polar code, chosen from the measured worst change; the bound holds, files equal memory, old files load."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from napari_fpminr.errors import FPMInputError
from napari_fpminr.io.model_file import load_model, read_header, save_model
from napari_fpminr.optics import Optics
from napari_fpminr.recon.lowrank import CODE_SHARE_DB, LOGPOLAR_ENCODING, LowRankArchitecture, LowRankField
from napari_fpminr.recon.model import Model

N_Z = 17
# a defocus-like field: the first term carries every plane (constant z line), the others fall off fast;
# singular values relative to the weakest plane's norm (about 1)
TERMS_DB = (0.0, -20.0, -30.0, -38.0, -45.0, -50.0, -55.0, -62.0)


def _optics():
    na = np.stack(np.meshgrid(np.linspace(-0.2, 0.2, 3), np.linspace(-0.2, 0.2, 3)), -1).reshape(-1, 2)
    return Optics(wavelength_um=0.52, na_obj=0.25, mag=10, pixel_um=3.45, na_illum=na, upsample=2)


def synthetic_field(terms_db=TERMS_DB, n_z: int = N_Z, seed: int = 0, lr_shape=(16, 16)) -> LowRankField:
    """A rank-``len(terms_db)`` field ``N = Q·diag(σ)·V`` with orthonormal z lines ``Q`` (the first constant)
    and orthonormal spectra ``V`` whose bins fall off like an image spectrum (many weak bins)."""
    g = torch.Generator().manual_seed(seed)
    arch = LowRankArchitecture.for_optics(_optics(), lr_shape, -20.0, 20.0, n_z, len(terms_db))
    net = LowRankField(arch)
    k = net.index.numel()

    def c(*shape):
        return torch.complex(torch.randn(*shape, generator=g, dtype=torch.float64),
                             torch.randn(*shape, generator=g, dtype=torch.float64))

    lines = torch.cat([torch.ones(n_z, 1, dtype=torch.complex128), c(n_z, len(terms_db) - 1)], 1)
    q, _ = torch.linalg.qr(lines)
    envelope = torch.logspace(0, -3, k, dtype=torch.float64)[torch.randperm(k, generator=g)]
    v, _ = torch.linalg.qr((c(len(terms_db), k) * envelope).t())
    sigma = torch.tensor([10 ** (d / 20) for d in terms_db], dtype=torch.float64) * np.sqrt(n_z)
    line, coef = q * np.sqrt(n_z), sigma[:, None] * v.t() / np.sqrt(n_z)
    with torch.no_grad():
        net.coefficients.copy_(torch.view_as_real(coef.to(torch.complex64)).permute(2, 0, 1))
        net.z_line.copy_(torch.view_as_real(line.to(torch.complex64)).permute(2, 0, 1))
    return net


def _worst_relative_change_db(a: LowRankField, b: LowRankField) -> float:
    """Largest change of any decoded plane relative to that plane's own energy, over the nodes, between
    them and beyond the ends (clamped), in dB."""
    z = torch.cat([torch.linspace(a.arch.z_min_um - 1, a.arch.z_max_um + 1, 1001),
                   torch.as_tensor(a.arch.node_depths(), dtype=torch.float32)])
    sa, sb = a.spectra(z).to(torch.complex128), b.spectra(z).to(torch.complex128)
    rel = (sa - sb).abs().square().sum(1) / sa.abs().square().sum(1)
    return float(10 * np.log10(rel.max().item()))


def test_weak_terms_go_to_16_bits_and_every_plane_stays_within_the_tolerance():
    net = synthetic_field()
    small = net.compacted(-60.0)
    report = small.compaction_report
    r, c = small.arch.rank, small.arch.coarse_terms
    assert c >= 3, report  # the rate allocation does something
    assert report["encodings"] == ["float16"] * (r - c) + [LOGPOLAR_ENCODING] * c
    assert report["stored_change_db"] <= -60.0
    # decoded planes, everywhere, against the field before compaction: within the tolerance of their energy
    assert _worst_relative_change_db(net, small) <= -60.0
    assert report["code_change_db"] <= -60.0 + CODE_SHARE_DB  # the codes' own share of the tolerance
    # ... and one more coarse term would have broken one of the two (the allocation stops at the budget)
    plan = net.compaction(-60.0)
    line, coef = plan.terms(small.arch.rank)

    def stored(coarse):
        f = LowRankField(LowRankArchitecture(**{**small.arch.__dict__, "coarse_terms": coarse}))
        with torch.no_grad():
            f.coefficients.copy_(torch.view_as_real(coef.to(torch.complex64)).permute(2, 0, 1))
            f.z_line.copy_(torch.view_as_real(line.to(torch.complex64)).permute(2, 0, 1))
        return f.round_to_storage_().node_matrix()

    def worst(delta):
        return float(delta.abs().square().sum(1).max().sqrt())

    more = stored(small.arch.coarse_terms + 1)
    budget = 10 ** (-60 / 20) * plan.min_plane_norm
    assert worst(net.node_matrix() - more) > budget or worst(more - stored(0)) > budget * 10 ** (CODE_SHARE_DB / 20)


def test_a_strong_term_is_never_put_in_the_coarse_code():
    net = synthetic_field((0.0, -3.0, -50.0, -55.0))
    assert net.compacted(-60.0).arch.term_encodings == ("float16", "float16", LOGPOLAR_ENCODING, LOGPOLAR_ENCODING)
    # even where its 16-bit error (about -40 dB of its energy) would fit a loose tolerance, the first term
    # (the mean field, every plane's bulk) keeps float16
    loose = net.compacted(-20.0)
    assert loose.arch.term_encodings[0] == "float16" and loose.arch.coarse_terms == loose.arch.rank - 1
    with pytest.raises(ValueError, match="coarse_terms"):
        LowRankArchitecture(**{**loose.arch.__dict__, "coarse_terms": loose.arch.rank})


def test_file_round_trip_is_bit_identical_to_the_rounded_model(tmp_path):
    net = synthetic_field().compacted(-60.0)
    assert net.arch.coarse_terms > 0
    model = Model(net, _optics(), (16, 16), {"note": "x"})
    path = save_model(model, tmp_path / "m.fpminr")
    loaded = load_model(path)
    assert loaded.arch == net.arch and read_header(path)["format_version"] == 3
    assert torch.equal(loaded.net.coefficients, net.coefficients) and torch.equal(loaded.net.z_line, net.z_line)
    z = [-20.0, -3.3, 0.0, 11.7]
    for a, b in zip(model.render(z), loaded.render(z)):
        np.testing.assert_array_equal(a, b)
    # rounding again changes nothing (the stored scale of a log-polar term is its own decoded peak)
    again = {k: v.clone() for k, v in net.storage_tensors().items()}
    before = net.coefficients.detach().clone()
    net.round_to_storage_()
    assert torch.equal(net.coefficients, before)
    assert all(torch.equal(again[k], v) for k, v in net.storage_tensors().items())
    # 16 bits per complex coefficient for the coarse terms, 32 for the others
    tensors = net.storage_tensors()
    assert tensors["coefficients_logpolar"].dtype == torch.uint8
    assert tensors["coefficients"].shape[1] + tensors["coefficients_logpolar"].shape[1] == net.arch.rank


def test_a_format_2_file_still_loads(tmp_path):
    """Files written before the per-term codes (format 2: every term float16 under ``lowrank.coefficients``,
    no ``coarse_terms``) load as they were written."""
    net = synthetic_field(TERMS_DB[:4])
    net.round_to_storage_()  # coarse_terms 0: exactly the format-2 rounding
    model = Model(net, _optics(), (16, 16), {})
    header = read_header(save_model(model, tmp_path / "new.fpminr"))
    arch = {k: v for k, v in header["architecture"].items() if k != "coarse_terms"}
    old = tmp_path / "v2.fpminr"
    coef = net.coefficients.detach()
    scale = coef.abs().amax(dim=(0, 2))
    tensors = {"lowrank.coefficients": (coef / scale[None, :, None]).to(torch.float16),  # the format-2 layout
               "lowrank.coefficient_scale": scale, "lowrank.z_line": net.z_line.detach().clone()}
    save_file(tensors, str(old), metadata={"fpminr": json.dumps(dict(header, format_version=2, architecture=arch))})
    loaded = load_model(old)
    assert loaded.arch.coarse_terms == 0 and torch.equal(loaded.net.coefficients, net.coefficients)
    np.testing.assert_array_equal(loaded.render([1.0])[0], model.render([1.0])[0])
    # a format-2 file never holds log-polar terms: one naming them is refused, naming the file
    bad = tmp_path / "v2bad.fpminr"
    save_file(tensors, str(bad), metadata={"fpminr": json.dumps(dict(header, format_version=2,
                                                                    architecture=dict(arch, coarse_terms=1)))})
    with pytest.raises(FPMInputError, match="version 2") as err:
        load_model(bad)
    assert bad.name in str(err.value)


@pytest.mark.parametrize("change", ["missing_coarse", "coarse_dtype", "coarse_shape", "too_many_coarse"])
def test_a_bad_coarse_layout_is_refused_before_allocation(tmp_path, change):
    net = synthetic_field().compacted(-60.0)
    model = Model(net, _optics(), (16, 16), {})
    path = save_model(model, tmp_path / "m.fpminr")
    header = read_header(path)
    tensors = {f"lowrank.{k}": v for k, v in net.storage_tensors().items()}
    arch = dict(header["architecture"])
    key = "lowrank.coefficients_logpolar"
    if change == "missing_coarse":
        del tensors[key]
    elif change == "coarse_dtype":
        tensors[key] = tensors[key].to(torch.int16)
    elif change == "coarse_shape":
        tensors[key] = tensors[key][:, :, :-3].contiguous()
    else:
        arch["coarse_terms"] = arch["rank"]
    bad = tmp_path / "bad.fpminr"
    save_file(tensors, str(bad), metadata={"fpminr": json.dumps(dict(header, architecture=arch))})
    with pytest.raises(FPMInputError) as err:
        load_model(bad)
    assert bad.name in str(err.value) and "\n" not in str(err.value)
