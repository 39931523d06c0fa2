"""Depth map and all-in-focus quality from reconstructed stacks of simulated samples (issue 3, item 6).

The truth: ``Truth.depth_um`` (depth of the structure per pixel, NaN where transparent) and, for
the all-in-focus image, the product of the layer amplitudes (one layer for the tilted slide).
The errors are measured on pixels with structure where the estimate has a depth too, and that
must be most of them (the coverage check), so that a method cannot pass by giving up.
"""

import numpy as np
import pytest

from napari_fpminr.optics.simulate import simulate
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


# Known shortfall (measured 2026-11-26, this case, default training over the planes' range):
# the INR's all-in-focus is sharp (36.6 dB, above the floor) but its slices barely change with z,
# so the focus measure finds no peak and the depth map is 5.3 µm off (median) where the
# conventional stack is 0.2–0.5 µm off. Strict xfail: an XPASS means training was fixed and the
# marker must go (docs/benchmarks.md, "INR quality: open problem").
@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="FPM-INR slices barely change with z: depth map ~5 µm off")
def test_tilted_smear_inr_depth_within_1um_and_sharp_all_in_focus():
    from napari_fpminr.recon.train import TrainConfig, train

    seed, zs, psnr_floor = CASES["tilted"]
    sim = simulate("tilted", size=SIZE, seed=seed)
    model = train(sim.raw, float(zs[0]), float(zs[-1]), TrainConfig(device="cpu", seed=1))
    amplitude, phase = model.render(zs)
    fused, depth = all_in_focus(amplitude, zs, patch=PATCH, stride=STRIDE, phase=phase)
    err, coverage = depth_errors(depth, sim.truth)
    assert coverage >= 0.9, coverage
    assert psnr_scaled(fused, sim.truth.amplitude[0]) >= psnr_floor
    assert np.median(err) <= 1.0, (np.median(err), np.percentile(err, 75))
