"""The real-data calibration check shared by test_calibration_real.py (green) and
test_calibration_real_red.py (red): two files so that the suite's two worker processes run them
side by side (each is a full calibration of a real file, the suite's longest tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_fpminr.calib import calibrate
from napari_fpminr.io import read_raw
from napari_fpminr.recon.conventional import reconstruct_stack
from napari_fpminr.recon.metrics import measurement_misfit

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
HAS_DATA = (DATA / "bloodsmear_green.mat").is_file()


def _best_misfit(raw, z0: float) -> float:
    zs = z0 + np.arange(-5.0, 5.01, 2.5)
    st = reconstruct_stack(raw, zs, iterations=25, pupil_update=True, device="cpu")
    m = measurement_misfit(raw.normalized(), st.amplitude * np.exp(1j * st.phase), zs, device="cpu", pupil=st.pupil)
    return float(m.min())


def check_calibration_lowers_the_misfit(name: str, z0: float, most: float) -> None:
    """Calibrate the real file ``name`` and check the misfit at best focus (48² crop at (32, 32))
    falls to at most ``most`` × the nominal model's."""
    raw = read_raw(DATA / f"bloodsmear_{name}.mat").with_optics(pupil=None)
    cal = calibrate(raw, device="cpu")
    assert not cal.fallback and cal.report["misfit_after"] < cal.report["misfit_before"]
    crop = raw.crop(32, 32, 48, 48)
    nominal, calibrated = _best_misfit(crop, z0), _best_misfit(cal.apply(crop), z0)
    print(f"{name}: {cal.report['chosen']}; misfit at best focus {nominal:.4f} -> {calibrated:.4f} "
          f"({100 * (calibrated / nominal - 1):+.1f} %)")
    assert calibrated <= most * nominal
