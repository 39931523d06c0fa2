"""Any lab's rig (issue 19): the real-data defaults measured stage by stage, and on simulated rigs.

Three parts (``--part``):

* ``rigs``: the simulated 8×8 rig of tests/rigs (8-bit PNG frames, 2 % saturated, 2 % background,
  Poisson noise) with its board in each of the 8 orientations relative to its CSV, for each sample:
  ``fpminr import`` then the default preparation (``calib.prepare``) and a conventional (fpm) or
  INR reconstruction, against the same solver on the true geometry with the true background
  removed. Prints the orientation verdict and the PSNR gap.
* ``capture``: the paper-like board misplaced on a grid of shift ±2 mm, rotation ±6°, height ±6 %,
  brightness ±30 %; default preparation (which searches the board) vs the true geometry.
* ``stages``: the cost of each stage of the default pipeline on a measured file (UConn green
  blood smear, 64² crop) as ratios to today's (pre-issue-19) default, a plain reconstruction.

Run:  .venv/bin/python benchmarks/bench_rigs.py --part rigs --orientations 0 1 6 --samples 0 --methods fpm
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "rigs"))
sys.path.insert(0, str(ROOT / "tests" / "calib"))


def _reconstruct(raw, method: str, z: float, pupil: bool):
    from napari_fpminr.recon.conventional import reconstruct_stack
    from napari_fpminr.recon.train import TrainConfig, train

    norm = raw.normalized()
    if method == "fpm":
        return reconstruct_stack(norm, [z], pupil_update=pupil).amplitude[0]
    model = train(norm, z - 4.0, z + 4.0, TrainConfig(recover_pupil=pupil, device="cpu"))
    return model.render([z])[0][0]


def part_rigs(args) -> None:
    from rig_cases import IMPORT_ARGS, make_rig, with_true_geometry, write_frames

    from napari_fpminr.calib.prepare import prepare, subtract_background
    from napari_fpminr.cli import main as cli
    from napari_fpminr.io import read_raw
    from napari_fpminr.recon.metrics import psnr_scaled

    print("orientation sample method | verdict | default dB | true geometry dB | gap dB | prepare s")
    for orient, sample in itertools.product(args.orientations, args.samples):
        rig = make_rig(orient, sample, size=args.size)
        with tempfile.TemporaryDirectory() as tmp:
            frames, csv_path = write_frames(rig, Path(tmp) / "frames", seed=orient)
            out = Path(tmp) / "data.tif"
            assert cli(["import", f"{frames}/image*.png", "-o", str(out), "--led-positions", str(csv_path),
                        *IMPORT_ARGS]) == 0
            measured = read_raw(out)
        t0 = time.perf_counter()
        prep = prepare(measured, device="cpu")
        t_prep = time.perf_counter() - t0
        verdict = next((d for d in prep.decisions if d.startswith("board orientation")), "?")
        ref_raw = subtract_background(with_true_geometry(measured, rig), prep.background)
        for method in args.methods:
            got = psnr_scaled(_reconstruct(prep.raw, method, rig.z_um, prep.recover_pupil), rig.truth_amplitude)
            ref = psnr_scaled(_reconstruct(ref_raw, method, rig.z_um, True), rig.truth_amplitude)
            print(f"{orient} {sample} {method} | {verdict} | {got:.2f} | {ref:.2f} | {got - ref:+.2f} | {t_prep:.0f}",
                  flush=True)


def part_capture(args) -> None:
    from calib_cases import miscalibrated

    from napari_fpminr.calib.prepare import prepare
    from napari_fpminr.recon.metrics import psnr_scaled

    print("shift mm, rotation deg, height | default dB | true geometry dB | gap dB")
    worst = 0.0
    for shift, rot, h in itertools.product([-2.0, 2.0], [-6.0, 6.0], [0.94, 1.06]):
        raw, true, bright, sim = miscalibrated(args.size, shift_mm=shift, rotation_deg=rot, height_scale=h,
                                               brightness_spread=0.3)
        measured = replace(raw, meta={"format": "test"})
        prep = prepare(measured, device="cpu")
        truth = sim.truth.amplitude[0]
        got = psnr_scaled(_reconstruct(prep.raw, "fpm", 0.0, prep.recover_pupil), truth)
        ref_raw = replace(sim.raw, intensities=sim.raw.intensities, meta={"format": "test"})
        ref = psnr_scaled(_reconstruct(ref_raw, "fpm", 0.0, True), truth)
        worst = min(worst, got - ref)
        print(f"{shift:+.1f}, {rot:+.1f}, {h:.2f} | {got:.2f} | {ref:.2f} | {got - ref:+.2f}", flush=True)
    print(f"worst gap {worst:+.2f} dB")


def part_stages(args) -> None:
    from napari_fpminr.calib.check import check_measurement
    from napari_fpminr.calib.prepare import PrepareOptions, prepare
    from napari_fpminr.io import read_raw
    from napari_fpminr.recon.conventional import reconstruct_stack

    path = Path(args.data) / "bloodsmear_green.mat"
    if not path.is_file():
        print(f"skipped: {path} not present")
        return
    raw = read_raw(path).with_optics(pupil=None).crop(32, 32, 64, 64)
    z = 10.0
    t0 = time.perf_counter()
    reconstruct_stack(raw.normalized(), [z], pupil_update=False)
    base = time.perf_counter() - t0
    rows = [("today's default: one plane, ideal pupil (baseline)", base)]
    t0 = time.perf_counter()
    check_measurement(raw, device="cpu")
    rows.append(("fpminr info --check", time.perf_counter() - t0))
    t0 = time.perf_counter()
    prep = prepare(raw, PrepareOptions(drop_bad_frames=False), device="cpu")
    rows.append(("calibration (board search + rounds + candidates)", time.perf_counter() - t0))
    t0 = time.perf_counter()
    prepare(raw, PrepareOptions(calibrate=False), device="cpu")
    rows.append(("frame check (bad frames) + background", time.perf_counter() - t0))
    t0 = time.perf_counter()
    reconstruct_stack(prep.raw.normalized(), [z], pupil_update=True)
    rows.append(("the plane with pupil recovery", time.perf_counter() - t0))
    for name, sec in rows:
        print(f"{name:55s} {sec:7.1f} s  {sec / base:6.1f}x")
    print("decisions: " + " | ".join(prep.decisions))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=("rigs", "capture", "stages"), default="stages")
    p.add_argument("--orientations", type=int, nargs="+", default=list(range(8)))
    p.add_argument("--samples", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["fpm", "inr"])
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    args = p.parse_args()
    {"rigs": part_rigs, "capture": part_capture, "stages": part_stages}[args.part](args)


if __name__ == "__main__":
    main()
