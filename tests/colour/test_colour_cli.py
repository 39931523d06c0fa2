"""``fpminr reconstruct R G B --colour`` / ``render`` / ``info`` on a colour set: outputs and one-line refusals."""

import numpy as np
import pytest

from napari_fpminr.cli import main
from napari_fpminr.colour.stained import simulate_stained
from napari_fpminr.io import write_raw


@pytest.fixture(scope="module")
def rgb_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("rgb")
    s = simulate_stained(32, seed=2)
    return [write_raw(r, d / f"{n}.tif") for n, r in zip(("red", "green", "blue"), s.raws, strict=True)]


def test_colour_fpm_stack_from_three_files_in_any_order(rgb_files, tmp_path, capsys):
    red, green, blue = (str(p) for p in rgb_files)
    out = tmp_path / "c.npz"
    assert main(["reconstruct", blue, red, green, "--colour", "--method", "fpm", "--z", "0", "--iterations", "10",
                 "--focus-search-um", "4", "--focus-step-um", "2", "--focus-crop", "24", "-q", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "ordered by wavelength" in err and "best focus" in err and "offset" in err
    with np.load(out, allow_pickle=False) as f:
        H = 32 * 2
        assert f["transmittance"].shape == (1, 3, H, H) and f["rgb"].shape == (1, H, H, 3)
        assert np.allclose(f["wavelength_um"], [0.63, 0.532, 0.475])


def test_colour_refusals_are_one_line(rgb_files, tmp_path, capsys):
    red, green, blue = (str(p) for p in rgb_files)
    out = str(tmp_path / "c.npz")
    assert main(["reconstruct", red, green, "-o", out]) == 2
    assert "add --colour" in capsys.readouterr().err
    assert main(["reconstruct", red, green, "--colour", "-o", out]) == 2
    assert "three raw files" in capsys.readouterr().err
    assert main(["reconstruct", red, red, red, "--colour", "-o", out]) == 2
    assert "three different wavelengths" in capsys.readouterr().err
    assert main(["reconstruct", red, green, blue, "--colour", "--method", "fpm", "-o", str(tmp_path / "m.fpminr")]) == 2
    assert "colour stack" in capsys.readouterr().err


def test_render_and_info_of_a_colour_model(colour_model, tmp_path, capsys):
    from napari_fpminr.colour.file import save_colour_model

    path = save_colour_model(colour_model, tmp_path / "c.fpminr")
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert "colour" in text and "red" in text and "compression" in text
    out = tmp_path / "p.npz"
    assert main(["render", str(path), "--z", "-1", "0", "-q", "-o", str(out)]) == 0
    with np.load(out, allow_pickle=False) as f:
        assert f["transmittance"].shape[:2] == (2, 3) and f["rgb"].shape[-1] == 3
        assert f["amplitude"].shape == f["phase"].shape == f["transmittance"].shape
    assert main(["render", str(path), "--all-in-focus", "--patch", "16", "--stride", "8", "-q",
                 "-o", str(tmp_path / "a.npz")]) == 0
    with np.load(tmp_path / "a.npz", allow_pickle=False) as f:
        assert f["transmittance"].shape[:2] == (1, 3) and f["depth_um"].shape == f["transmittance"].shape[2:]
    assert main(["render", str(path), "--z", "9", "-o", str(tmp_path / "bad.npz")]) == 2
    assert "outside the colour model's range" in capsys.readouterr().err
