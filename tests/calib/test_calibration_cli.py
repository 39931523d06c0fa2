"""``fpminr calibrate`` and ``reconstruct --calibration/--calibrate``; ``*.calib.json`` files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from calib_cases import miscalibrated
from napari_fpminr.calib import Calibration
from napari_fpminr.cli import main
from napari_fpminr.errors import FPMInputError
from napari_fpminr.io.calibration_file import read_calibration, write_calibration
from napari_fpminr.io.raw_writers import write_raw


@pytest.fixture(scope="module")
def raw_file(tmp_path_factory):
    raw, true, bright, _ = miscalibrated(32, brightness_spread=0.1)
    path = tmp_path_factory.mktemp("calib") / "board.tif"
    write_raw(raw, path)
    return path, raw, true


@pytest.mark.slow
def test_calibrate_prints_findings_and_writes_a_file(raw_file, capsys, tmp_path):
    path, raw, true = raw_file
    out = tmp_path / "board.calib.json"
    assert main(["calibrate", str(path), "-o", str(out), "-q", "--calib-rounds", "2"]) == 0
    text = capsys.readouterr().out
    for what in ("board shift", "rotation", "height", "brightness", "background", "misfit"):
        assert what in text
    cal = read_calibration(out)
    assert not cal.fallback and cal.report["misfit_after"] < cal.report["misfit_before"]
    assert np.abs(cal.na(raw) - true.na_at()).max() < np.abs(raw.optics.na_illum - true.na_at()).max()
    assert json.loads(out.read_text())["format"] == "fpminr-calibration"


@pytest.mark.slow
def test_reconstruct_applies_a_calibration_and_the_model_records_it(raw_file, tmp_path, capsys):
    path, raw, _ = raw_file
    cal = Calibration.identity(raw).replace(shift_mm=(0.3, 0.2), rotation_deg=1.0,
                                            brightness=np.linspace(0.9, 1.1, raw.n_leds))
    calib = write_calibration(cal, tmp_path / "c.calib.json")
    model = tmp_path / "m.fpminr"
    assert main(["reconstruct", str(path), "-o", str(model), "--calibration", str(calib), "--z-min", "-2",
                 "--z-max", "2", "-q"]) == 0
    from napari_fpminr.io.model_file import load_model

    recorded = load_model(model).meta["calibration"]
    assert recorded["shift_mm"] == [0.3, 0.2] and recorded["rotation_deg"] == 1.0
    assert recorded["kind"] == "board" and not recorded["fallback"]
    trained_na = np.sort(np.hypot(*load_model(model).optics.na_illum.T))  # calibrated NAs (any LED order)
    assert np.allclose(trained_na, np.sort(np.hypot(*cal.na(raw).T)))
    # depth from the measurements: the raw file alone is not the training data, with the calibration it is
    aif = tmp_path / "aif.npz"
    assert main(["render", str(model), "-o", str(aif), "--all-in-focus", "--raw", str(path), "--z-step", "1",
                 "--patch", "16", "--stride", "8", "-q"]) == 2
    assert "not the ones the model was trained on" in capsys.readouterr().err
    assert main(["render", str(model), "-o", str(aif), "--all-in-focus", "--raw", str(path), "--calibration",
                 str(calib), "--z-step", "1", "--patch", "16", "--stride", "8", "-q"]) == 0
    assert aif.exists()
    # the same calibration stamped with another data set's fingerprint: refused in one line, unless forced
    from dataclasses import replace

    from napari_fpminr.cli.calibrate import _fingerprint

    other = replace(raw, intensities=raw.intensities * np.float32(1.01))
    foreign = write_calibration(cal.replace(report={"data": _fingerprint(other)}), tmp_path / "f.calib.json")
    capsys.readouterr()
    render = ["render", str(model), "-o", str(tmp_path / "f.npz"), "--all-in-focus", "--raw", str(path),
              "--calibration", str(foreign), "--z-step", "1", "--patch", "16", "--stride", "8", "-q"]
    assert main(render) == 2
    err = capsys.readouterr().err.strip()
    assert "made for other data" in err and len(err.splitlines()) == 1
    assert main(render + ["--force-calibration"]) == 0


def test_bad_calibration_files_are_one_line_errors(raw_file, tmp_path, capsys):
    path, raw, _ = raw_file
    cases = {"not json": "{", "wrong format": json.dumps({"format": "x"}),
             "bad brightness": json.dumps({"format": "fpminr-calibration", "version": 1, "kind": "board",
                                           "n_leds": raw.n_leds, "brightness": [-1.0] * raw.n_leds}),
             "wrong led count": json.dumps({"format": "fpminr-calibration", "version": 1, "kind": "board",
                                            "n_leds": 5})}
    for name, text in cases.items():
        bad = tmp_path / f"{name.replace(' ', '_')}.calib.json"
        bad.write_text(text)
        out = tmp_path / "x.npz"
        code = main(["reconstruct", str(path), "-o", str(out), "--method", "fpm", "--z", "0",
                     "--calibration", str(bad), "-q"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, name
        assert len(err) == 1 and str(bad) in err[0], (name, err)
        assert not out.exists()
    with pytest.raises(FPMInputError, match="not found"):
        read_calibration(tmp_path / "missing.calib.json")


def test_calibration_file_round_trip_is_exact(raw_file, tmp_path):
    _, raw, _ = raw_file
    cal = Calibration.identity(raw).replace(shift_mm=(0.1, -0.05), height_scale=1.02,
                                            brightness=np.linspace(0.8, 1.2, raw.n_leds), background=0.003,
                                            na_illum=raw.optics.na_illum * 1.01, report={"misfit_before": 0.2})
    back = read_calibration(write_calibration(cal, tmp_path / "r.calib.json"))
    assert back.to_dict() == cal.to_dict()
    assert np.array_equal(back.apply(raw).intensities, cal.apply(raw).intensities)


@pytest.mark.slow
def test_reconstruct_calibrate_inline_with_the_bright_field_seed(raw_file, tmp_path, capsys):
    """``--calibrate`` fits inline (here seeded by the bright-field disks) and reports what it found."""
    path, raw, _ = raw_file
    out = tmp_path / "s.npz"
    assert main(["reconstruct", str(path), "-o", str(out), "--method", "fpm", "--z", "0", "--iterations", "3",
                 "--calibrate", "--calib-rounds", "1", "--calib-method", "both", "-q"]) == 0
    err = capsys.readouterr().err
    assert "misfit" in err and "board shift" in err
    assert np.load(out)["amplitude"].shape[0] == 1
