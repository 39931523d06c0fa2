"""Acceptance on the simulated stained slide (issue 20): focus offsets, lateral shifts, per-channel
quality against each channel reconstructed alone at its own true focus, colour error (CIEDE2000)."""

import numpy as np
import pytest
import torch

from napari_fpminr.colour.colourmath import ciede2000, lab
from napari_fpminr.colour.job import ColourJob, iter_colour, order_channels
from napari_fpminr.colour.register import fourier_shift
from napari_fpminr.colour.stained import simulate_stained
from napari_fpminr.recon.conventional import reconstruct_stack
from napari_fpminr.recon.metrics import psnr_scaled


@pytest.fixture(scope="module")
def slide():
    return simulate_stained(48, seed=0)  # red +3 um, blue -3 um, red 0.4 raw px along x


@pytest.fixture(scope="module")
def colour(slide):
    raws, _ = order_channels(list(slide.raws))
    job = ColourJob(method="fpm", planes_um=np.array([slide.z_um]), iterations=25, device="cpu")
    events = list(iter_colour(raws, job))
    assert 0 <= events[0].fraction <= events[-1].fraction == 1.0
    return events[-1].result


def test_focus_offsets_and_lateral_shifts_are_recovered(slide, colour):
    up = slide.raws[0].optics.upsample
    for c, reg in enumerate(colour.registration):
        true_offset = slide.focus_um[c] - slide.focus_um[1]
        assert abs(reg.z_offset_um - true_offset) <= 0.5, (c, reg.z_offset_um, true_offset)
        true_shift = np.subtract(slide.shift_raw_px[c], slide.shift_raw_px[1])
        assert np.all(np.abs(np.array(reg.shift_px) / up - true_shift) <= 0.1), (c, reg.shift_px, true_shift)
    # a pure translation: the patch shifts' noise must not pass for an affine (it would resample the channel)
    assert not any(r and r["applied"] for r in colour.meta["affine"]), colour.meta["affine"]
    assert all(reg.linear == (0.0, 0.0, 0.0, 0.0) for reg in colour.registration)


def test_channels_match_reconstructing_each_alone_at_its_true_focus(slide, colour):
    up = slide.raws[0].optics.upsample
    amplitude = np.sqrt(colour.slices.transmittance[0])  # (3, H, W), registered, white-balanced
    for c in range(3):
        alone = reconstruct_stack(slide.raws[c], [slide.focus_um[c]], iterations=25, device="cpu").amplitude[0]
        moved_truth = fourier_shift(torch.as_tensor(slide.truth[c]), *(v * up for v in slide.shift_raw_px[c]))
        baseline = psnr_scaled(alone, np.abs(moved_truth.numpy()))
        ours = psnr_scaled(amplitude[c], np.abs(slide.truth[c]))
        assert ours >= baseline - 0.5, (c, ours, baseline)


def test_colour_error_against_band_limited_truth(slide, colour):
    ours = lab(np.moveaxis(colour.slices.transmittance[0], 0, -1))
    truth = lab(np.moveaxis(slide.transmittance, 0, -1))
    assert np.median(ciede2000(ours, truth)) <= 2.0
    # the background is white: the stain-free glass reads transmittance 1 in every channel
    glass = np.all(slide.transmittance > 0.99, axis=0)
    assert glass.mean() > 0.1
    assert np.allclose(np.median(colour.slices.transmittance[0][:, glass], axis=1), 1.0, atol=0.02)
    rgb = colour.slices.rgb[0]
    assert rgb.dtype == np.uint8 and rgb.shape[-1] == 3 and np.median(rgb[glass]) >= 250
