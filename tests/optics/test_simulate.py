"""Simulator: paper optics, multislice physics against FPMForward, determinism, truth, noise."""

import json
import math

import numpy as np
import pytest
import torch

from napari_fpminr.errors import FPMInputError
from napari_fpminr.optics import FPMForward
from napari_fpminr.simulate import multislice_intensities, paper_optics, simulate


def random_layer(shape, seed):
    rng = np.random.default_rng(seed)
    amp = 1 - 0.5 * rng.random(shape)
    return torch.as_tensor(amp * np.exp(1j * 0.8 * rng.standard_normal(shape)), dtype=torch.complex64)


def test_paper_optics_matches_the_papers_simulation_setup():
    optics = paper_optics()
    assert optics.n_leds == 69
    assert optics.wavelength_um == pytest.approx(0.522) and optics.na_obj == 0.25
    assert optics.dx_lr_um == pytest.approx(0.345)
    assert optics.na_illum_abs.max() <= 0.25
    assert optics.upsample == 2 and optics.required_upsample() <= 2
    # square grid, symmetric: mean illumination direction is on axis
    np.testing.assert_allclose(optics.na_illum.mean(axis=0), 0.0, atol=1e-12)


def test_single_thin_layer_is_exactly_the_fpm_forward_model():
    optics = paper_optics()
    fwd = FPMForward(optics, (24, 24))
    layer = random_layer(fwd.hr_shape, 0)
    expected = fwd.intensities(layer, 6.5)[0]
    got = multislice_intensities(layer[None], [6.5], fwd)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_multislice_propagates_downstream_with_the_forward_model_sign():
    """Illumination crosses layers in decreasing z; a transparent layer anywhere changes nothing."""
    optics = paper_optics()
    fwd = FPMForward(optics, (24, 24))
    layer = random_layer(fwd.hr_shape, 1)
    clear = torch.ones(fwd.hr_shape, dtype=torch.complex64)
    expected = fwd.intensities(layer, 7.0)[0]
    below = multislice_intensities(torch.stack([layer, clear]), [7.0, -5.0], fwd)   # propagate 12 µm, image at -5
    above = multislice_intensities(torch.stack([clear, layer]), [15.0, 7.0], fwd)
    torch.testing.assert_close(below, expected, rtol=0, atol=2e-5)
    torch.testing.assert_close(above, expected, rtol=0, atol=2e-5)
    # two real layers do interact: not the sum of their separate images' effects
    other = random_layer(fwd.hr_shape, 2)
    both = multislice_intensities(torch.stack([layer, other]), [7.0, -5.0], fwd)
    thin = fwd.intensities(layer * other, -5.0)[0]  # same layers with no gap between them
    assert (both - thin).abs().max() > 0.05


def test_simulate_single_matches_its_band_limited_truth_and_records_provenance():
    sim = simulate("single", size=32, seed=3, z_um=4.0)
    raw, truth = sim.raw, sim.truth
    assert raw.intensities.shape == (69, 32, 32) and raw.z_um == 4.0
    assert raw.meta["preset"] == "single" and raw.meta["seed"] == 3
    assert truth.amplitude.shape == truth.phase.shape == (1, 64, 64)
    # the band-limited truth keeps everything any LED window sees: it predicts the data
    field = torch.as_tensor(truth.amplitude[0] * np.exp(1j * truth.phase[0]))
    predicted = FPMForward(raw.optics, raw.lr_shape).intensities(field, 4.0)[0].numpy()
    np.testing.assert_allclose(predicted, raw.intensities, atol=0.02)
    # sparse cells on a transparent background, amplitude down to ~0.3, phase up to ~1 rad
    structure = np.isfinite(truth.depth_um)
    assert 0.03 < structure.mean() < 0.6
    np.testing.assert_allclose(truth.depth_um[structure], 4.0)
    assert np.median(truth.amplitude[0][~structure]) == pytest.approx(1.0, abs=0.02)
    assert truth.amplitude.min() < 0.6 and 0.5 < truth.phase.max() < 1.6


def test_simulate_is_deterministic_by_seed():
    a = simulate("layers", size=24, seed=5)
    b = simulate("layers", size=24, seed=5)
    c = simulate("layers", size=24, seed=6)
    np.testing.assert_array_equal(a.raw.intensities, b.raw.intensities)
    np.testing.assert_array_equal(a.truth.amplitude, b.truth.amplitude)
    assert np.abs(a.raw.intensities - c.raw.intensities).max() > 0.1


def test_layers_preset_has_one_truth_layer_per_depth():
    sim = simulate("layers", size=32, seed=0)
    np.testing.assert_array_equal(sim.truth.z_um, [-12.0, 0.0, 12.0])
    assert sim.truth.amplitude.shape == (3, 64, 64)
    for layer in range(3):
        mask = sim.truth.mask(layer)
        assert mask.sum() > 20, "every layer carries some structure"
        # a layer is transparent away from its own structure
        others = np.isfinite(sim.truth.depth_um) & ~mask
        assert np.abs(sim.truth.amplitude[layer][~mask & ~others] - 1).mean() < 0.03


def test_tilted_slide_depth_varies_linearly_across_x():
    sim = simulate("tilted", size=24, seed=2)
    depth = sim.truth.depth_um
    cols = np.nanmean(depth, axis=0)
    ok = np.isfinite(cols)
    assert ok.sum() > 10
    slope = np.polyfit(np.flatnonzero(ok), cols[ok], 1)[0]
    field_um = 48 * sim.truth.dx_hr_um
    assert slope * 48 == pytest.approx(8.0, rel=0.05)  # -4..+4 µm across the field by default
    assert np.nanmin(depth) >= -4.01 and np.nanmax(depth) <= 4.01
    assert sim.raw.meta["angle_deg"] == pytest.approx(math.degrees(math.atan(8 / field_um)), rel=1e-6)
    # a stained smear: absorbing cells with a weak phase
    assert sim.truth.amplitude.min() < 0.6 and sim.truth.phase.max() < 0.2
    # the tilt matters: a flat slide at the centre depth gives different images
    flat = simulate("single", size=24, seed=2, z_um=0.0, phase_max_rad=0.15)
    assert np.abs(flat.raw.intensities - sim.raw.intensities).max() > 0.05


def test_tilted_slide_options_angle_and_phase():
    sim = simulate("tilted", size=24, seed=2, angle_deg=4.0, z_centre_um=1.0, phase_max_rad=0.8)
    assert sim.raw.meta["angle_deg"] == pytest.approx(4.0)
    span = np.nanmax(sim.truth.depth_um) - np.nanmin(sim.truth.depth_um)
    assert span <= 48 * sim.truth.dx_hr_um * math.tan(math.radians(4.0)) + 1e-3
    assert np.nanmean(sim.truth.depth_um) == pytest.approx(1.0, abs=0.3)
    assert sim.truth.phase.max() > 0.3  # the phase default is only a default


def test_noise_option_changes_the_data_by_the_requested_amount():
    clean = simulate("single", size=24, seed=1)
    noisy = simulate("single", size=24, seed=1, noise=0.05)
    diff = noisy.raw.intensities - clean.raw.intensities
    assert 0.04 < diff.std() < 0.06
    assert noisy.raw.intensities.min() >= 0
    shot = simulate("single", size=24, seed=1, photons=100.0)
    assert np.abs(shot.raw.intensities - clean.raw.intensities).max() > 0.05


def test_truth_save_is_atomic_and_loads_without_pickle(tmp_path):
    sim = simulate("layers", size=16, seed=0, z_um=np.array([-4.0, 4.0]))  # numpy options stay JSON-safe
    out = sim.truth.save(tmp_path / "truth.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["truth.npz"]
    with np.load(out, allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["amplitude"], sim.truth.amplitude)
        np.testing.assert_array_equal(npz["z_um"], sim.truth.z_um)
        meta = json.loads(str(npz["meta"]))
        assert meta["preset"] == "layers" and meta["z_um"] == [-4.0, 4.0]


def test_bad_requests_are_user_errors():
    with pytest.raises(FPMInputError, match="preset"):
        simulate("galaxy")
    with pytest.raises(FPMInputError, match="size"):
        simulate("single", size=3)
    with pytest.raises(FPMInputError, match="option"):
        simulate("single", size=16, colour="red")
    with pytest.raises(FPMInputError, match="upsample"):
        simulate("single", size=16, optics=paper_optics(upsample=1))
