"""Per-LED intensity correction in the conventional solver (recon/qnewton.py).

A measured LED's brightness is known only to the calibration's estimate. Here every frame of a
simulation is scaled by an unknown brightness (±30 % uniform, the issue's capture-range spread) and
then stated with a brightness 15 % rms off (an uncalibrated board of ±30 % LEDs is 17 % off; the
calibration's estimate 6–16 % on the capture-range corners): the solver sees the ratio. Without correction the wrong targets are written into the spectrum on
every pass; with it, each LED's gain is fitted against the current estimate and the
reconstruction comes back to the one with the exact brightness.

Measured when written (single layer, 40² raw, pupil recovery on, 25 passes): exact brightness
46.01 dB; 15 % rms error uncorrected 43.21 dB, corrected 46.05 dB (7 %: 45.25 / 46.03); the exact
set with correction on 46.01 dB. On the capture-range corner (+2 mm, −6°, 0.94) of
docs/benchmarks.md the calibrated data go from 39.98 to 42.62 dB (true geometry 42.67).
"""

from dataclasses import replace

import numpy as np
import pytest

from napari_fpminr.calib.prepare import PrepareOptions, prepare
from napari_fpminr.recon.conventional import reconstruct_stack
from napari_fpminr.recon.metrics import psnr_scaled
from napari_fpminr.simulate import simulate


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def case():
    sim = simulate("single", size=40, seed=3)
    rng = np.random.default_rng(7)
    residual = np.clip(1.0 + 0.15 * rng.standard_normal(sim.raw.n_leds), 0.5, 1.5)  # brightness / estimate
    wrong = replace(sim.raw, intensities=(sim.raw.intensities * residual[:, None, None]).astype(np.float32))
    return sim, residual, wrong


def _psnr(raw, sim, **kw):
    stack = reconstruct_stack(raw.normalized(), [0.0], pupil_update=True, **kw)
    return psnr_scaled(stack.amplitude[0], sim.truth.amplitude[0]), stack


def test_the_fitted_gains_bring_a_wrong_brightness_back_to_the_exact_reconstruction(case):
    sim, residual, wrong = case
    exact, _ = _psnr(sim.raw, sim, intensity_correction=False)
    plain, _ = _psnr(wrong, sim, intensity_correction=False)
    corrected, stack = _psnr(wrong, sim, intensity_correction=True)
    assert plain < exact - 2.0, (exact, plain)  # the error matters
    assert corrected > exact - 0.3, (exact, plain, corrected)
    # the intensity gains undo the brightness residual, up to the scale they share with the object
    gain = stack.led_gain[0] ** 2
    bf = sim.raw.optics.bright_field
    rel = (gain * residual) / np.mean(gain[bf] * residual[bf])
    assert np.sqrt(np.mean((rel[bf] - 1) ** 2)) < 0.02


def test_correction_costs_nothing_on_exact_data_and_is_off_unless_asked(case):
    sim, _, _ = case
    exact, stack = _psnr(sim.raw, sim, intensity_correction=False)
    on, _ = _psnr(sim.raw, sim, intensity_correction=True)
    assert on > exact - 0.2
    assert stack.led_gain is None and stack.meta["intensity_correction"] is False


def test_the_real_data_preparation_turns_it_on_only_when_asked(case):
    """Off by default even for measurements (it broke the registration of the real colour channels,
    calib/prepare.py); ``--correct-intensity`` asks for it, and the decision is printed."""
    sim, _, wrong = case
    measured = replace(wrong, meta={"format": "test"})
    opts = PrepareOptions(calibrate=False, drop_bad_frames=False, orientation="stated")
    default = prepare(measured, opts, device="cpu")
    assert not default.raw.brightness_uncertain
    assert any(line.startswith("LED brightness: as stated") for line in default.decisions)
    asked = prepare(measured, replace(opts, correct_intensity=True), device="cpu")
    assert asked.raw.brightness_uncertain
    assert any(line.startswith("LED brightness: refined per LED") for line in asked.decisions)
    stack = reconstruct_stack(asked.raw.normalized(), [0.0], iterations=3)
    assert stack.meta["intensity_correction"] is True and stack.led_gain.shape == (1, sim.raw.n_leds)
    assert reconstruct_stack(default.raw.normalized(), [0.0], iterations=3).led_gain is None
