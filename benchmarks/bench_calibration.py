"""Illumination self-calibration on a simulated miscalibrated board (issue 11 acceptance case).

The sample (``--preset``, default ``layers``: thin cell layers at -12, 0, +12 µm) is simulated with
the true board: the paper's 69-LED board (4 mm pitch, 70 mm) shifted 0.5 mm, rotated 2°, 3 %
further away, each LED image times a brightness factor uniform in ±20 %. Calibration gets the
nominal board. Reported: the recovered geometry and brightness errors, and the per-layer amplitude
PSNR (``recon.metrics.psnr_scaled`` at each layer's depth, the metric of bench_zstack.py) of
conventional reconstructions (25 iterations) from

* the truth: true NAs, intensities divided by the true brightness;
* the calibrated data (``Calibration.apply``);
* the nominal data (no calibration).

Run: ``python benchmarks/bench_calibration.py --size 64`` (prints a markdown table row).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "calib"))


def run(size: int, preset: str, seed: int, device: str, rounds: int) -> dict:
    from calib_cases import TRUE_HEIGHT_SCALE, TRUE_ROTATION_DEG, paper_like_optics

    from napari_fpminr.calib import calibrate
    from napari_fpminr.optics.geometry import led_positions_mm
    from napari_fpminr.simulate import paper_leds, simulate
    from napari_fpminr.rawdata import RawData
    from napari_fpminr.recon.conventional import reconstruct_stack
    from napari_fpminr.recon.metrics import psnr_scaled

    nominal = paper_leds(69)
    true = nominal.replace(centre_mm=(0.5 * np.cos(0.6), 0.5 * np.sin(0.6)), rotation_deg=TRUE_ROTATION_DEG,
                           distance_mm=nominal.distance_mm * TRUE_HEIGHT_SCALE)
    bright = np.random.default_rng(seed + 100).uniform(0.8, 1.2, 69)
    sim = simulate(preset, size=size, seed=seed, optics=paper_like_optics(true.na_at()))
    intens = sim.raw.intensities * bright[:, None, None].astype(np.float32)
    raw = RawData(intensities=intens, optics=paper_like_optics(nominal.na_at()), leds=nominal, z_um=0.0)
    t0 = time.perf_counter()
    cal = calibrate(raw, rounds=rounds, device=device)
    t_cal = time.perf_counter() - t0

    def origin(board):
        return led_positions_mm(np.zeros((1, 2)), board.pitch_mm, board.centre_mm, board.rotation_deg)[0]

    fitted = cal.board(nominal)
    truth_b = bright / bright[raw.optics.bright_field].mean()
    out = {"size": size, "preset": preset, "calibration_s": round(t_cal, 1), "fallback": cal.fallback,
           "shift_error_mm": float(np.hypot(*(origin(fitted) - origin(true)))),
           "rotation_error_deg": float(fitted.rotation_deg - TRUE_ROTATION_DEG),
           "height_error_pct": float(100 * (fitted.distance_mm / true.distance_mm - 1)),
           "brightness_error_max_pct": float(100 * np.abs(cal.brightness / truth_b - 1).max()),
           "brightness_error_rms_pct": float(100 * np.sqrt(np.mean((cal.brightness / truth_b - 1) ** 2))),
           "misfit_before": cal.report.get("misfit_before"), "misfit_after": cal.report.get("misfit_after")}
    z = np.asarray(sim.truth.z_um)
    reference = RawData(intensities=sim.raw.intensities, optics=paper_like_optics(true.na_at()), leds=true)
    for name, data in (("truth", reference), ("calibrated", cal.apply(raw)), ("nominal", raw)):
        stack = reconstruct_stack(data, z, iterations=25, device=device)
        out[f"psnr_{name}"] = [psnr_scaled(stack.amplitude[i], sim.truth.amplitude[i], mask=sim.truth.mask(i))
                               for i in range(z.size)]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--preset", default="layers")
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    res = run(args.size, args.preset, args.seed, args.device, args.rounds)
    fmt = lambda v: ", ".join(f"{x:.1f}" for x in v)  # noqa: E731
    print("| size | shift err (mm) | rotation err (°) | height err (%) | brightness err max/rms (%) | misfit "
          "before → after | PSNR truth | PSNR calibrated | PSNR nominal | calibration time |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {res['size']}² | {res['shift_error_mm']:.3f} | {res['rotation_error_deg']:+.3f} | "
          f"{res['height_error_pct']:+.3f} | {res['brightness_error_max_pct']:.2f} / {res['brightness_error_rms_pct']:.2f} | "
          f"{res['misfit_before']:.4f} → {res['misfit_after']:.4f} | {fmt(res['psnr_truth'])} | "
          f"{fmt(res['psnr_calibrated'])} | {fmt(res['psnr_nominal'])} | {res['calibration_s']:.0f} s |")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
