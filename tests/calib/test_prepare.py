"""Real-data defaults (calib/prepare.py): who gets what, one line per decision, and models that can
rebuild their training data."""

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from calib_cases import miscalibrated
from napari_fpminr.calib.model import Calibration
from napari_fpminr.calib.prepare import PrepareOptions, prepare, replay
from napari_fpminr.errors import FPMInputError
from napari_fpminr.io import write_raw
from napari_fpminr.simulate import simulate


def test_simulated_data_keep_the_stated_geometry_and_ideal_pupil():
    raw = simulate("single", size=32, seed=1).raw
    prep = prepare(raw, device="cpu")
    assert prep.calibration is None and not prep.recover_pupil and not prep.dropped and prep.background == 0
    assert prep.raw is raw
    assert prep.decisions[0].startswith("data: a simulation")
    assert any("simulated data keep the stated geometry" in d for d in prep.decisions)


def test_measurement_opt_outs_are_honoured_and_said():
    raw, _, _, _ = miscalibrated(32)
    prep = prepare(raw, PrepareOptions(calibrate=False, drop_bad_frames=False, recover_pupil=False), device="cpu")
    assert prep.decisions[0].startswith("data: a measurement")
    assert prep.calibration is None and not prep.recover_pupil
    assert any(d == "calibration: none (--no-calibrate)" for d in prep.decisions)
    assert any(d.startswith("pupil: ideal disk (--no-recover-pupil)") for d in prep.decisions)


def test_background_floor_is_measured_and_subtracted():
    """A board close to the sample (30 mm: LEDs up to NA 0.5, most of them dark field) plus a camera
    offset of 3 % of the bright-field level: the darkest dark-field frame's mean finds it."""
    from calib_cases import paper_like_optics
    from napari_fpminr.rawdata import RawData
    from napari_fpminr.simulate import paper_leds

    leds = paper_leds(69, distance_mm=30.0)
    sim = simulate("single", size=32, seed=3, optics=paper_like_optics(leds.na_at()).replace(upsample=4), z_um=0.0)
    measured = RawData(intensities=sim.raw.intensities + np.float32(0.03), optics=sim.raw.optics, leds=leds, z_um=0.0)
    prep = prepare(measured, PrepareOptions(calibrate=False, drop_bad_frames=False), device="cpu")
    assert prep.background == pytest.approx(0.03, abs=0.01)
    assert any(d.startswith("background: ") and "subtracted" in d for d in prep.decisions)


def test_replay_rebuilds_the_training_data_and_refuses_a_damaged_record():
    raw, _, _, _ = miscalibrated(32)
    cal = Calibration.identity(raw, shift_mm=(0.2, -0.1), rotation_deg=1.0,
                               brightness=np.linspace(0.8, 1.2, raw.n_leds))
    from napari_fpminr.calib.prepare import Preparation, subtract_background

    data = cal.apply(subtract_background(raw, 0.01))
    keep = np.setdiff1d(np.arange(raw.n_leds), [3, 7])
    prep = Preparation(raw=data.select_leds(keep), recover_pupil=True, decisions=[], calibration=cal,
                       dropped=[3, 7], background=0.01)
    again = replay(raw, prep.record())
    np.testing.assert_array_equal(again.intensities, prep.raw.intensities)
    np.testing.assert_array_equal(again.optics.na_illum, prep.raw.optics.na_illum)
    for damage in ({"background": -1.0}, {"dropped": [999]}, {"dropped": "x"},
                   {"calibration": {"version": 1, "kind": "board", "n_leds": 5}}):
        with pytest.raises(FPMInputError):
            replay(raw, dict(prep.record(), **damage))


def test_simulated_files_stay_simulated_through_the_cli(tmp_path):
    """A file written by `fpminr simulate` is read back as simulated: reconstruct keeps today's defaults."""
    path = tmp_path / "sim.tif"
    write_raw(simulate("single", size=24, seed=2).raw, path)
    proc = subprocess.run([sys.executable, "-m", "napari_fpminr.cli", "reconstruct", str(path), "-o",
                           str(tmp_path / "s.npz"), "--method", "fpm", "--z", "0", "--iterations", "3", "-q"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "data: a simulation" in proc.stderr and "pupil: ideal disk" in proc.stderr
