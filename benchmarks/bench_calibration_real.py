"""Real data (issue 11): misfit at best focus of the UConn blood smears, nominal vs self-calibrated.

For each file in ``../shared/data`` (green, red, blue): ``calibrate`` with its defaults (64² central
crop, quick reconstructions at the file's stated depth), then the issue's measure on the 48² raw
crop at (32, 32): a 25-pass conventional reconstruction with pupil recovery at planes every 2.5 µm
over ±15 µm around the stated depth, and its relative amplitude misfit per plane
(``recon.metrics.measurement_misfit``, each plane with its recovered pupil); the best plane.
The calibrated misfit is given two ways: against the calibrated data (``Calibration.apply``:
intensities divided by the brightness, background removed; what earlier figures reported), and
in the measured data's units (the prediction times the brightness plus the background, against
the file's own intensities).

Run:  .venv/bin/python benchmarks/bench_calibration_real.py [--data ../shared/data] [--files green red]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

STATED_Z = {"green": 10.0, "red": -55.0, "blue": -15.0}


def best_misfit(raw, z0: float, brightness=None, background: float = 0.0,
                measured_intensities=None) -> tuple[float, float, float]:
    """``(best misfit, its depth, misfit in measured units)`` of the issue's protocol on ``raw``."""
    import torch

    from napari_fpminr.optics.forward import FPMForward
    from napari_fpminr.recon.conventional import reconstruct_stack
    from napari_fpminr.recon.metrics import measurement_misfit

    zs = z0 + np.arange(-15.0, 15.01, 2.5)
    st = reconstruct_stack(raw, zs, iterations=25, pupil_update=True, device="cpu")
    fields = st.amplitude * np.exp(1j * st.phase)
    norm = raw.normalized()
    m = measurement_misfit(norm, fields, zs, device="cpu", pupil=st.pupil)
    k = int(np.argmin(m))
    measured = float(m[k])
    if brightness is not None:  # the same prediction in the file's units: b·I_pred·level + background
        level = raw.background_level()
        fwd = FPMForward(norm.optics, norm.lr_shape, "cpu")
        with torch.no_grad():
            pred = fwd.intensities(torch.as_tensor(fields[k:k + 1], dtype=torch.complex64), zs[k:k + 1],
                                   pupil=torch.as_tensor(st.pupil[k], dtype=torch.complex64))[0].numpy()
        pred_meas = brightness[:, None, None] * pred * level + background
        meas = measured_intensities
        measured = float(np.linalg.norm(np.sqrt(np.clip(pred_meas, 0, None)) - np.sqrt(meas)) / np.linalg.norm(np.sqrt(meas)))
    return float(m[k]), float(zs[k]), measured


def run(path: Path, z0: float) -> dict:
    from napari_fpminr.calib import calibrate
    from napari_fpminr.io import read_raw

    raw = read_raw(path).with_optics(pupil=None)
    t0 = time.perf_counter()
    cal = calibrate(raw, device="cpu")
    t_cal = time.perf_counter() - t0
    crop = raw.crop(32, 32, 48, 48)
    nominal, z_nom, _ = best_misfit(crop, z0)
    out = {"stated_z_um": z0, "nominal": nominal, "nominal_z_um": z_nom, "calibration_s": t_cal,
           "chosen": cal.report.get("chosen"), "fallback": bool(cal.fallback),
           "calibration_misfit_before": cal.report.get("misfit_before"),
           "candidates": cal.report.get("candidates")}
    if not cal.fallback:
        calibrated = cal.apply(crop)
        m_cal, z_cal, m_meas = best_misfit(calibrated, z0, cal.brightness.astype(np.float64), float(cal.background),
                                           crop.intensities.astype(np.float64))
        out.update(calibrated=m_cal, calibrated_z_um=z_cal, calibrated_measured_units=m_meas,
                   change=m_cal / nominal - 1.0, change_measured_units=m_meas / nominal - 1.0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--files", nargs="+", default=["green", "red", "blue"])
    args = ap.parse_args()
    results = {}
    for name in args.files:
        results[name] = run(Path(args.data) / f"bloodsmear_{name}.mat", STATED_Z[name])
        print(name, json.dumps(results[name]), flush=True)


if __name__ == "__main__":
    main()
