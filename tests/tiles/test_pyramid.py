"""Mosaic pyramid levels at their own resolution (tiles/pyramid.py), all-in-focus and info on mosaics.

The mosaic is untrained (tiles/synthetic.py): per-tile low-rank models of a known phase-rich
field, the left tiles in focus at -1 µm and the right ones at +1 µm, so that every figure can be
checked against the field itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_fpminr.cli import main
from napari_fpminr.io.mosaic_file import load_mosaic
from napari_fpminr.tiles.pyramid import MosaicPyramid

FOCUS = {0: -1.0, 1: -1.0, 2: 1.0, 3: 1.0}


def _pool(a: np.ndarray, s: int) -> np.ndarray:
    h, w = a.shape[-2] // s, a.shape[-1] // s
    return a[..., :h * s, :w * s].reshape(a.shape[:-2] + (h, s, w, s)).mean(axis=(-3, -1))


def _psnr(x: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10(ref.max() ** 2 / np.mean((x - ref) ** 2)))


@pytest.fixture(scope="module")
def mosaic_path(tmp_path_factory) -> Path:
    from napari_fpminr.optics.samples import band_limit, cell_layer
    from napari_fpminr.simulate import paper_optics
    from napari_fpminr.tiles.synthetic import synthetic_mosaic

    optics = paper_optics()
    n = 416  # 208 raw px: 4 x 4 tiles of 64 (overlap 16)
    cells = cell_layer((n, n), optics.dx_hr_um, np.random.default_rng(3), phase_max_rad=3.0, cells_per_100um2=3.0)
    field = band_limit(cells, optics.dx_hr_um, optics.na_synthetic / optics.wavelength_um).astype(np.complex64)
    out = tmp_path_factory.mktemp("pyramid") / "slide.fpminr"
    return synthetic_mosaic(out, field, optics, 64, 16, z_range_um=(-2.0, 2.0), n_planes=9, n_z=17,
                            focus_um=lambda r, c: FOCUS[c])


def test_level_zero_is_the_mosaic_render_and_coarser_levels_are_area_averages(mosaic_path):
    mosaic = load_mosaic(mosaic_path)
    pyr = MosaicPyramid(mosaic)
    z = 0.7
    (full,) = mosaic.render([z], parts=("amplitude",))
    full = full[0]
    np.testing.assert_allclose(pyr.region(z, 1, (30, 50, 200, 300)), full[30:230, 50:350], rtol=1e-4, atol=1e-5)
    level1 = pyr.region(z, 2, (0, 0) + pyr.level_shape(2))
    np.testing.assert_allclose(level1, _pool(full, 2), rtol=1e-4, atol=1e-5)  # exact: every hr pixel, 2x2 mean
    for step, floor_db in ((4, 38.0), (8, 32.0)):
        level = pyr.region(z, step, (0, 0) + pyr.level_shape(step))
        ref = _pool(full, step)
        good, aliased = _psnr(level, ref), _psnr(full[::step, ::step], ref)
        assert good > floor_db and good > aliased + 8, (step, good, aliased)
    # low-passing the complex field alone is not the area average for a phase-rich sample
    coherent = MosaicPyramid(mosaic, antialias=1).region(z, 4, (0, 0) + pyr.level_shape(4))
    assert _psnr(coherent, _pool(full, 4)) < _psnr(pyr.region(z, 4, (0, 0) + pyr.level_shape(4)), _pool(full, 4)) - 5


def test_a_view_decodes_its_tiles_once_in_one_batch_within_the_model_budget(mosaic_path):
    mosaic = load_mosaic(mosaic_path)
    pyr = MosaicPyramid(mosaic, model_budget_bytes=1)  # keeps only the last tile model loaded
    under = mosaic.layout.tiles_touching(100, 100, 150, 150)
    a = pyr.region(0.2, 1, (100, 100, 150, 150))
    assert pyr.decode_batches == 1 and pyr.decoded_tiles == len(under) < mosaic.layout.n_tiles
    assert len(pyr._models.items) == 1
    again = pyr.region(0.2, 1, (100, 100, 150, 150))
    assert pyr.decode_batches == 1  # from the tile-image cache
    np.testing.assert_array_equal(a, again)
    roomy = MosaicPyramid(mosaic)
    np.testing.assert_allclose(roomy.region(0.2, 1, (100, 100, 150, 150)), a, rtol=1e-6, atol=1e-7)
    assert roomy.has(0.2, 1, (100 * 1, 100, 150, 150)) and not roomy.has(0.3, 1, (100, 100, 150, 150))


def test_info_prints_the_mosaic_summary_and_best_focus_map(mosaic_path, capsys):
    capsys.readouterr()
    assert main(["info", str(mosaic_path)]) == 0
    text = capsys.readouterr().out
    assert "16 tiles of 64 raw px" in text and "best focus     -1.00 .. 1.00 um across tiles" in text
    grid = text.split("best focus (um) per tile, 4 x 4 tiles\n")[1].splitlines()[:4]
    assert [row.split() for row in grid] == [["-1.00", "-1.00", "+1.00", "+1.00"]] * 4


def test_render_all_in_focus_on_a_mosaic_finds_each_tile_depth_and_blends(mosaic_path, tmp_path):
    out = tmp_path / "aif.npz"
    assert main(["render", str(mosaic_path), "-o", str(out), "--all-in-focus", "--z-step", "0.25", "-q"]) == 0
    got = np.load(out)
    fused, depth = got["amplitude"][0], got["depth_um"]
    mosaic = load_mosaic(mosaic_path)
    assert fused.shape == depth.shape == mosaic.hr_shape
    W = mosaic.hr_shape[1]
    left, right = depth[40:-40, 40:W // 2 - 60], depth[40:-40, W // 2 + 60:-40]
    # each side at its own depth (the edges measure reads ~0.2 um high on both: the separation is exact)
    assert np.nanmedian(left) == pytest.approx(-1.0, abs=0.35) and np.nanmedian(right) == pytest.approx(1.0, abs=0.35)
    assert np.nanmedian(right) - np.nanmedian(left) == pytest.approx(2.0, abs=0.2)
    # the fused image is the sharp one: each side matches its own in-focus plane better than the other plane
    (a_lo,), (a_hi,) = (mosaic.render([zz], parts=("amplitude",))[0] for zz in (-1.0, 1.0))
    sl = (slice(40, -40), slice(40, W // 2 - 60))
    assert np.abs(fused[sl] - a_lo[sl]).mean() < 0.5 * np.abs(fused[sl] - a_hi[sl]).mean()
    assert main(["render", str(mosaic_path), "-o", str(tmp_path / "x.npz"), "--all-in-focus", "--level", "1"]) == 2


def test_tiles_decoded_through_their_model_give_the_exact_area_average(mosaic_path):
    """The path of feature-plane + MLP tiles (full resolution, block-averaged), here forced on low-rank tiles."""
    mosaic = load_mosaic(mosaic_path)
    pyr = MosaicPyramid(mosaic)
    for tile in mosaic.layout.tiles():
        pyr._prepared(tile).model = mosaic.tile_model(tile.row, tile.col)
    (full,) = mosaic.render([0.4], parts=("amplitude",))
    level = pyr.region(0.4, 4, (0, 0) + pyr.level_shape(4))
    np.testing.assert_allclose(level, _pool(full[0], 4), rtol=1e-4, atol=1e-5)
