"""The ``fpminr`` command line: the DESIGN.md §4 contract, run as a user runs it (a subprocess)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_fpminr.cli import main, z_planes

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def run_cli(*args, cwd=None):
    """Run ``fpminr`` in a fresh interpreter; returns (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "napari_fpminr.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def test_z_planes_match_the_papers_161_planes():
    z = z_planes(-20, 20, 0.25)
    assert len(z) == 161 and z[0] == -20 and z[-1] == 20
    np.testing.assert_allclose(np.diff(z), 0.25)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "layers.tif"
    assert main(["simulate", str(out), "--preset", "layers", "--size", "32", "--seed", "3"]) == 0
    return out


def test_simulate_writes_raw_and_truth(simulated):
    assert simulated.exists() and simulated.with_suffix(".json").exists()
    truth = np.load(simulated.with_name("layers.truth.npz"), allow_pickle=False)
    assert truth["amplitude"].shape[0] == 3
    np.testing.assert_allclose(truth["z_um"], [-12, 0, 12])


def test_info_describes_raw_data(simulated):
    code, out, err = run_cli("info", simulated)
    assert code == 0, err
    assert "69 x 32 x 32 px" in out and "0.5220 um" in out and "upsample 2" in out


@pytest.mark.skipif(not (SHARED_DATA / "bloodsmear_green.mat").exists(), reason="shared data absent")
def test_info_on_real_uconn_file():
    code, out, err = run_cli("info", SHARED_DATA / "bloodsmear_green.mat")
    assert code == 0, err
    assert "225 (19 bright-field)" in out and "+10.00 um" in out and "upsample 4" in out


@pytest.mark.parametrize("content", [b"", b"MATLAB 5.0 MAT-file, truncated", b"\x89PNG\r\n\x1a\n1234"])
def test_bad_raw_file_exits_2_with_one_line_and_no_output(tmp_path, content):
    bad = tmp_path / "bad.mat"
    bad.write_bytes(content)
    out = tmp_path / "out.npz"
    code, stdout, err = run_cli("reconstruct", bad, "-o", out, "--method", "fpm", "--z", "0")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "bad.mat" in lines[0] and "Traceback" not in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mat"]


def test_missing_file_and_wrong_output_suffix_are_one_line_errors(tmp_path, simulated):
    code, _, err = run_cli("info", tmp_path / "nope.tif")
    assert code == 2 and "nope.tif" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("reconstruct", simulated, "-o", tmp_path / "x.png", "--method", "fpm")
    assert code == 2 and "x.png" in err and "Traceback" not in err


def test_end_to_end_inr_and_fpm(tmp_path, simulated):
    """simulate -> reconstruct (inr, fpm) -> info -> render, as a batch user runs it."""
    model = tmp_path / "m.fpminr"
    code, out, err = run_cli("reconstruct", simulated, "-o", model, "--method", "inr", "--epochs", "2",
                             "--z-min", "-15", "--z-max", "15", "--device", "cpu")
    assert code == 0, err
    assert model.exists() and "inr [" in err  # progress went to stderr
    code, out, err = run_cli("info", model)
    assert code == 0, err
    assert "z range        -15 .. 15 um" in out and "compression" in out

    code, out, err = run_cli("render", model, "-o", tmp_path / "s.npz", "--z", "-12", "0", "12", "--phase")
    assert code == 0, err
    s = np.load(tmp_path / "s.npz", allow_pickle=False)
    assert s["amplitude"].shape == (3, 64, 64) and s["phase"].shape == (3, 64, 64)
    assert not np.allclose(s["amplitude"][0], s["amplitude"][2])  # different z, different slices

    code, out, err = run_cli("render", model, "-o", tmp_path / "aif.npz", "--all-in-focus")
    assert code == 0, err
    aif = np.load(tmp_path / "aif.npz", allow_pickle=False)
    assert aif["amplitude"].shape == (1, 64, 64) and aif["depth_um"].shape == (64, 64)
    depth = aif["depth_um"][np.isfinite(aif["depth_um"])]
    assert depth.size and np.all((depth >= -15) & (depth <= 15))

    # depth from the measurements: the raw data must be the model's own
    code, out, err = run_cli("render", model, "-o", tmp_path / "aif_data.npz", "--all-in-focus", "--raw", simulated)
    assert code == 0, err
    depth = np.load(tmp_path / "aif_data.npz", allow_pickle=False)["depth_um"]
    assert np.isfinite(depth).any()
    code, _, err = run_cli("render", model, "-o", tmp_path / "x.npz", "--all-in-focus", "--raw", simulated,
                           "--crop", "0", "0", "16", "16")
    assert code == 2 and "not the ones the model was trained on" in err and not (tmp_path / "x.npz").exists()
    code, _, err = run_cli("render", model, "-o", tmp_path / "x.npz", "--all-in-focus", "--focus-measure", "data")
    assert code == 2 and "needs --raw" in err

    code, _, err = run_cli("render", model, "-o", tmp_path / "x.npz", "--z", "30")
    assert code == 2 and "outside the model's range" in err and not (tmp_path / "x.npz").exists()

    code, out, err = run_cli("reconstruct", simulated, "-o", tmp_path / "fpm.tif", "--method", "fpm",
                             "--z-min", "-1", "--z-max", "1", "--z-step", "1", "--iterations", "3")
    assert code == 0, err
    import tifffile

    with tifffile.TiffFile(tmp_path / "fpm.tif") as tif:
        assert tif.asarray().shape == (3, 2, 64, 64) and tif.imagej_metadata["spacing"] == 1.0


def _good_mat_vars(n_leds=9, size=16):
    """Variables of a valid FPM-INR .mat: a 3x3 LED grid, small images."""
    c = np.array([-0.1, 0.0, 0.1])
    na = np.stack(np.meshgrid(c, c), -1).reshape(-1, 2)[:n_leds]
    images = np.ones((size, size, len(na)), np.float32)
    return {"I_low": images, "na_calib": na, "na_cal": 0.25, "mag": 10.0, "dpix_c": 3.45, "lambda": 0.52}


def _bad_mat(kind):
    v = _good_mat_vars()
    if kind == "wrong-key":
        v = {"temperature": np.arange(3.0)}
    elif kind == "wrong-shape":
        v["I_low"] = v["I_low"][:, :, 0]
    elif kind == "nan":
        v["I_low"][3, 4, 2] = np.nan
    elif kind == "mismatched":
        v["na_calib"] = v["na_calib"][:7]
    elif kind == "missing-wavelength":
        del v["lambda"]
    return v


@pytest.mark.parametrize("kind, fragment", [
    ("wrong-key", "not a recognised FPM raw-data file"),
    ("wrong-shape", "I_low"),
    ("nan", "NaN"),
    ("mismatched", "7"),
    ("missing-wavelength", "--wavelength-um"),
])
def test_every_kind_of_bad_file_exits_2_with_one_line_and_leaves_nothing(tmp_path, kind, fragment):
    import scipy.io

    bad = tmp_path / f"{kind}.mat"
    scipy.io.savemat(bad, _bad_mat(kind))
    for out in ("out.npz", "out.fpminr"):
        method = "fpm" if out.endswith(".npz") else "inr"
        code, _, err = run_cli("reconstruct", bad, "-o", tmp_path / out, "--method", method, "--z", "0")
        line = err.strip()
        assert code == 2, err
        assert "\n" not in line and bad.name in line and fragment in line and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [bad.name]


def test_the_good_variant_of_those_files_reconstructs(tmp_path):
    """Guards the test above: the same file without the defect is accepted."""
    import scipy.io

    good = tmp_path / "good.mat"
    scipy.io.savemat(good, _good_mat_vars())
    code, _, err = run_cli("reconstruct", good, "-o", tmp_path / "o.npz", "--method", "fpm", "--z", "0",
                           "--iterations", "1")
    assert code == 0, err
    assert (tmp_path / "o.npz").exists()
