"""Frames the model cannot fit (a dead LED, a doubled exposure, an LED off its stated place): named by
the check, and kept from wrecking the default reconstruction of a measurement."""


import numpy as np
import pytest

from calib_cases import paper_like_optics
from napari_fpminr.calib.check import check_measurement, outlier_frames
from napari_fpminr.calib.prepare import prepare
from napari_fpminr.rawdata import RawData
from napari_fpminr.recon.conventional import reconstruct_stack
from napari_fpminr.recon.metrics import psnr_scaled
from napari_fpminr.simulate import paper_leds, simulate

_NA = np.hypot(*paper_leds(69).na_at().T)
DEAD = int(np.argmin(_NA))                       # the central LED goes dark
DOUBLE = int(np.argmin(np.abs(_NA - 0.15)))      # a mid bright-field LED at twice the exposure
MOVED = int(np.argmin(np.abs(_NA - 0.223)))      # an LED at |NA| 0.223 actually sits at 0.268 (dark field)


def corrupted_set(size: int = 48):
    """``(clean raw, corrupted raw, truth amplitude)``: measurements (not marked simulated) of one cell
    layer; in the corrupted set frame DEAD is dark, DOUBLE twice as bright, and MOVED was taken with
    its LED moved outwards across the pupil edge while the file still states its old place."""
    leds = paper_leds(69)
    na_true = leds.na_at()
    na_true[MOVED] *= 1.2  # across the pupil edge (NA 0.25) into the dark field
    sim = simulate("single", size=size, seed=5, optics=paper_like_optics(na_true), z_um=0.0, photons=3000)
    stated = paper_like_optics(leds.na_at())
    clean_sim = simulate("single", size=size, seed=5, optics=stated, z_um=0.0, photons=3000)
    clean = RawData(intensities=clean_sim.raw.intensities, optics=stated, leds=leds, z_um=0.0)
    bad = sim.raw.intensities.copy()
    bad[DEAD] *= 0.01
    bad[DOUBLE] *= 2.0
    corrupted = RawData(intensities=bad, optics=stated, leds=leds, z_um=0.0)
    return clean, corrupted, clean_sim.truth.amplitude[0]


def test_outlier_frames_are_far_above_their_group():
    misfit = np.array([0.1, 0.11, 0.09, 0.1, 0.6, 0.3, 0.32, 0.29, 0.31, 2.5])
    bf = np.array([True] * 5 + [False] * 5)
    np.testing.assert_array_equal(outlier_frames(misfit, bf), [4, 9])


@pytest.fixture(scope="module")
def case():
    return corrupted_set()


def test_check_names_the_three_bad_frames(case):
    _, corrupted, _ = case
    rep = check_measurement(corrupted, device="cpu")
    named = {i for i, _ in rep.contradictions} | {i for i, _ in rep.bad_frames} | {i for i, _ in rep.brightness_outliers}
    assert {DEAD, DOUBLE, MOVED} <= named, rep.text()
    assert rep.orientation == 0
    text = rep.text()
    assert f"LED {DEAD}" in text and f"LED {DOUBLE}" in text and f"LED {MOVED}" in text


@pytest.mark.slow
def test_default_preparation_keeps_bad_frames_from_wrecking_the_reconstruction(case):
    clean, corrupted, truth = case
    prep = prepare(corrupted, device="cpu")
    got = reconstruct_stack(prep.raw.normalized(), [0.0], pupil_update=prep.recover_pupil)
    ref = reconstruct_stack(clean.normalized(), [0.0], pupil_update=True)
    naive = reconstruct_stack(corrupted.normalized(), [0.0], pupil_update=True)
    got_db, ref_db = psnr_scaled(got.amplitude[0], truth), psnr_scaled(ref.amplitude[0], truth)
    naive_db = psnr_scaled(naive.amplitude[0], truth)
    print(f"clean {ref_db:.2f} dB, default on the corrupted set {got_db:.2f} dB, corrupted as stated {naive_db:.2f} dB;"
          f" dropped {prep.dropped}; " + " | ".join(prep.decisions))
    assert got_db >= ref_db - 1.0
    assert any("frames: left out" in d for d in prep.decisions) or prep.calibration is not None
