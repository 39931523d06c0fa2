"""Compaction of low-rank fields (exact re-factorisation + truncation) and of colour models."""

import json

import numpy as np
import pytest
import torch

from napari_fpminr.colour.file import load_colour_model, save_colour_model
from napari_fpminr.recon.lowrank import COMPACTION_TOLERANCE_DB, LowRankArchitecture, LowRankField


def _field(true_rank: int, noise: float = 0.0, seed: int = 0) -> LowRankField:
    """Rank-8 parameters whose node matrix has rank ``true_rank`` (plus ``noise`` of full rank)."""
    g = torch.Generator().manual_seed(seed)
    arch = LowRankArchitecture((32, 32), -3.0, 3.0, 9, 8, 0.2, 1.4)
    net = LowRankField(arch)
    k = net.index.numel()

    def c(*shape):
        return torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)).to(torch.complex128)

    line = c(9, true_rank) @ c(true_rank, 8) + noise * c(9, 8)
    coef = c(8, k)
    with torch.no_grad():
        net.coefficients.copy_(torch.view_as_real(coef.to(torch.complex64)).permute(2, 0, 1))
        net.z_line.copy_(torch.view_as_real(line.to(torch.complex64)).permute(2, 0, 1))
    return net


def _worst_change_db(a: LowRankField, b: LowRankField) -> float:
    z = torch.linspace(a.arch.z_min_um - 0.5, a.arch.z_max_um + 0.5, 301)  # between nodes and clamped ends
    sa, sb = a.spectra(z).to(torch.complex128), b.spectra(z).to(torch.complex128)
    rel = (sa - sb).abs().square().sum(1) / sa.abs().square().sum(1)
    return float(10 * np.log10(rel.max().item()))


def test_exact_refactoring_finds_the_rank_of_a_separable_field_and_decodes_alike():
    net = _field(2)
    small = net.compacted()
    assert small.arch.rank == 2 and net.arch.rank == 8
    assert small.arch == type(net.arch)(**{**net.arch.__dict__, "rank": 2, "coarse_terms": small.arch.coarse_terms})
    assert _worst_change_db(net, small) <= -60.0  # only the float16 storage rounding is left
    fields_a = net.field(torch.tensor([-1.3, 0.2, 2.9]))
    fields_b = small.field(torch.tensor([-1.3, 0.2, 2.9]))
    assert torch.allclose(fields_a, fields_b, atol=2e-3 * fields_a.abs().max().item())


def test_truncation_keeps_every_plane_within_the_tolerance():
    net = _field(3, noise=3e-3)  # three strong terms and five weak ones, about -50 dB
    report = net.compaction(-40.0).report()
    assert report["terms"] == 8 and report["rank"] == 3 and report["bound_db"] <= -40.0
    for tol in (-40.0, -65.0):
        small = net.compacted(tol)
        assert _worst_change_db(net, small) <= tol + 0.5  # + float16 rounding
    assert net.compacted(-40.0).arch.rank == 3 and net.compacted(-65.0).arch.rank == 8  # rank follows the data
    assert COMPACTION_TOLERANCE_DB <= -50.0


def test_compacted_colour_model_saves_smaller_and_decodes_alike(colour_model, tmp_path):
    ranks = [m.arch.rank for m in colour_model.channels]
    # the fixture's channels come from 5-plane stacks that only dim with z: rank 1 in truth
    small = colour_model.compacted()
    assert [m.arch.rank for m in small.channels] == [1, 1, 1] and ranks == [2, 2, 2]
    assert [r["rank"] for r in small.meta["compaction"]] == [1, 1, 1]
    z = [0.0, 0.7]
    a = colour_model.render(z).transmittance
    b = small.render(z).transmittance
    assert np.abs(a - b).max() <= 1e-2 * a.max()
    big = save_colour_model(colour_model, tmp_path / "big.fpminr").stat().st_size
    path = save_colour_model(small, tmp_path / "small.fpminr")
    saved = sum(2 * m.net.index.numel() * 2 + 4 + 2 * m.arch.n_z * 4 for m in small.channels)  # one term each
    # the compaction record in the JSON header (JSON inside the safetensors header's JSON: quotes escaped)
    header_growth = len(json.dumps(json.dumps(small.meta["compaction"]))) + 64
    assert path.stat().st_size <= big - saved + header_growth
    loaded = load_colour_model(path)
    assert [m.arch.rank for m in loaded.channels] == [1, 1, 1]
    np.testing.assert_allclose(loaded.render(z).transmittance, b, atol=1e-5)
