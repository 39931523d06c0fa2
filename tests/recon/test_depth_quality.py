"""Depth map and all-in-focus quality from reconstructed stacks of simulated samples (issue 3, item 6).

The truth: ``Truth.depth_um`` (depth of the structure per pixel, NaN where transparent) and, for
the all-in-focus image, the product of the layer amplitudes (one layer for the tilted slide).
The errors are measured on pixels with structure where the estimate has a depth too, and that
must be most of them (the coverage check), so that a method cannot pass by giving up.
"""

import numpy as np
import pytest

from napari_fpminr.simulate import simulate
from napari_fpminr.recon.conventional import reconstruct_stack
from napari_fpminr.recon.metrics import psnr_scaled
from napari_fpminr.volume import all_in_focus

SIZE = 64          # raw pixels: 22 µm field (hr 128 px)
PATCH, STRIDE = 32, 8
CASES = {  # preset -> (seed, z planes, all-in-focus PSNR floor (dB))
    "layers": (7, np.arange(-16.0, 16.01, 1.0), 20.0),   # cells at -12, 0, +12 µm, phase up to 1 rad
    "tilted": (8, np.arange(-8.0, 8.01, 1.0), 33.0),     # stained smear, -4..+4 µm across the field
}


def depth_errors(depth, truth):
    has = np.isfinite(truth.depth_um)
    ok = has & np.isfinite(depth)
    return np.abs(depth - truth.depth_um)[ok], ok.sum() / has.sum()


def test_tilted_smear_conventional_depth_within_1um_and_sharp_all_in_focus():
    """Acceptance (issue 3, item 6): median depth error <= 1 µm where there is structure."""
    seed, zs, psnr_floor = CASES["tilted"]
    sim = simulate("tilted", size=SIZE, seed=seed)
    stack = reconstruct_stack(sim.raw, zs, device="cpu")
    fused, depth = all_in_focus(stack.amplitude, zs, patch=PATCH, stride=STRIDE, phase=stack.phase)
    err, coverage = depth_errors(depth, sim.truth)
    assert coverage >= 0.9, coverage
    assert np.median(err) <= 1.0, (np.median(err), np.percentile(err, 75))
    assert np.isfinite(fused).all()
    aif = psnr_scaled(fused, sim.truth.amplitude[0])
    assert aif >= psnr_floor, aif


def test_layers_conventional_depth_finds_the_layers():
    """Three overlapping cell layers 12 µm apart, phase up to 1 rad.

    A pixel where cells of two layers overlap has structure at two depths; its error is taken to
    the nearest layer that has structure there. The bound (median <= 3 µm, a quarter of the layer
    spacing) says that the right layer is found for most pixels; it is NOT the 1 µm of the
    acceptance point, which this preset does not reach reliably yet (1.0–2.3 µm over seeds).
    """
    seed, zs, psnr_floor = CASES["layers"]
    sim = simulate("layers", size=SIZE, seed=seed)
    truth = sim.truth
    stack = reconstruct_stack(sim.raw, zs, device="cpu")
    fused, depth = all_in_focus(stack.amplitude, zs, patch=PATCH, stride=STRIDE, phase=stack.phase)
    has = np.isfinite(truth.depth_um)
    ok = has & np.isfinite(depth)
    assert ok.sum() / has.sum() >= 0.9
    structure = np.abs(truth.amplitude * np.exp(1j * truth.phase) - 1) > 0.05  # (L, H, W)
    nearest = np.where(structure, np.abs(depth[None] - truth.z_um[:, None, None]), np.inf).min(0)
    assert np.median(nearest[ok]) <= 3.0, np.median(nearest[ok])
    aif = psnr_scaled(fused, np.prod(truth.amplitude, axis=0))
    assert aif >= psnr_floor, aif



@pytest.mark.parametrize("measure", ["data", "edges"])
def test_tilted_smear_inr_depth_within_1um(measure):
    """Acceptance (issue 3 item 6, issue 8) for the default FPM-INR model: its slices refocus like
    the conventional stack's, so the sharpness measure alone ("edges", no raw data) finds the
    tilted smear's depth as well as the depth from the measurements ("data") does."""
    from napari_fpminr.recon.train import TrainConfig, train
    from napari_fpminr.volume import Volume

    seed, zs, psnr_floor = CASES["tilted"]
    sim = simulate("tilted", size=SIZE, seed=seed)
    model = train(sim.raw, float(zs[0]), float(zs[-1]), TrainConfig(device="cpu", seed=1))
    raw = sim.raw if measure == "data" else None
    fused, depth = Volume(model).all_in_focus(zs, patch=PATCH, stride=STRIDE, raw=raw, measure=measure)
    err, coverage = depth_errors(depth, sim.truth)
    assert coverage >= 0.9, coverage
    assert np.median(err) <= 1.0, (np.median(err), np.percentile(err, 75))
    assert psnr_scaled(fused, sim.truth.amplitude[0]) >= psnr_floor


def test_depth_from_the_measurements_agrees_with_sharpness_on_the_conventional_stack():
    """Both measures on the conventional stack of the tilted smear are within 1 µm (median)."""
    seed, zs, _ = CASES["tilted"]
    sim = simulate("tilted", size=SIZE, seed=seed)
    stack = reconstruct_stack(sim.raw, zs, device="cpu")
    _, depth = all_in_focus(stack.amplitude, zs, patch=PATCH, stride=STRIDE, phase=stack.phase, raw=sim.raw)
    err, coverage = depth_errors(depth, sim.truth)
    assert coverage >= 0.9 and np.median(err) <= 1.0, (coverage, np.median(err))


def test_depth_from_the_measurements_needs_the_matching_raw_data():
    sim = simulate("single", size=16, seed=0)
    zs = np.array([-1.0, 0.0, 1.0])
    a = np.ones((3, 32, 32), np.float32)
    with pytest.raises(ValueError, match="needs the raw data"):
        all_in_focus(a, zs, phase=np.zeros_like(a), measure="data")
    with pytest.raises(ValueError, match="needs the phase"):
        all_in_focus(a, zs, measure="data", raw=sim.raw)
    with pytest.raises(ValueError, match="field of view"):
        all_in_focus(np.ones((3, 40, 40), np.float32), zs, phase=np.zeros((3, 40, 40), np.float32), raw=sim.raw)
