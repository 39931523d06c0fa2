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


# ---- zoomed-out levels from node images; rank truncation (issue 21, "zoomed out to fit") ----------------

def _rel_rms(x: np.ndarray, ref: np.ndarray) -> float:
    return float(np.sqrt(np.mean((x.astype(np.float64) - ref) ** 2) / np.mean(ref.astype(np.float64) ** 2)))


def _small_mosaic(out: Path, n_z: int, z_range=(-2.0, 2.0), rank: int = 4, n: int = 224) -> Path:
    """2 x 2 tiles of 64 raw px (overlap 16) of dense phase-rich cells, the sample 1.5 um from z = 0."""
    from napari_fpminr.optics.samples import band_limit, cell_layer
    from napari_fpminr.simulate import paper_optics
    from napari_fpminr.tiles.synthetic import synthetic_mosaic

    optics = paper_optics()
    cells = cell_layer((n, n), optics.dx_hr_um, np.random.default_rng(5), phase_max_rad=3.0, cells_per_100um2=3.0)
    field = band_limit(cells, optics.dx_hr_um, optics.na_synthetic / optics.wavelength_um).astype(np.complex64)
    return synthetic_mosaic(out, field, optics, 64, 16, z_range_um=z_range, n_planes=max(9, rank + 1), n_z=n_z,
                            rank=rank, focus_um=lambda r, c: 1.5)


def test_zoomed_out_levels_interpolate_node_images_within_the_node_tolerance(mosaic_path):
    from napari_fpminr.tiles.pyramid import NODE_TOL

    mosaic = load_mosaic(mosaic_path)
    pyr, fields = MosaicPyramid(mosaic), MosaicPyramid(mosaic, node_images=False)
    tiles = mosaic.layout.tiles()
    z_nodes = np.linspace(-2.0, 2.0, 17)
    for step in (4, 8):
        shape = (0, 0) + pyr.level_shape(step)
        at_node = pyr.region(float(z_nodes[5]), step, shape)  # builds every tile's node images at this level
        np.testing.assert_allclose(at_node, fields.region(float(z_nodes[5]), step, shape), rtol=1e-4, atol=1e-5)
        built = [pyr._prepared(t).nodes[step] for t in tiles]
        assert all(b is not None and b[0][0] == -2.0 and b[0][-1] == 2.0 for b in built)
        for z in (-2.3, -1.93, -0.62, 0.1, 0.875 + 0.0625, 1.99, 2.5):  # between nodes, and clamped outside
            err = _rel_rms(pyr.region(z, step, shape), fields.region(z, step, shape))
            assert err <= NODE_TOL, (step, z, err)
        assert all(pyr._prepared(t).nodes[step] is b for t, b in zip(tiles, built))  # built once
    # the amplitude's component fields at these levels are not kept (the node images replace them)
    assert all(key[0] == 1 for t in tiles for key in pyr._prepared(t).folded)
    # levels 0 and 1 are not interpolated: exact
    assert all(set(pyr._prepared(t).nodes) == {4, 8} for t in tiles)


def test_a_coarse_z_line_is_cut_until_the_interpolation_is_within_tolerance(tmp_path):
    from napari_fpminr.tiles.pyramid import NODE_TOL

    mosaic = load_mosaic(_small_mosaic(tmp_path / "coarse.fpminr", n_z=3))  # nodes 2 um apart
    fields = MosaicPyramid(mosaic, node_images=False)
    cut, uncut = MosaicPyramid(mosaic), MosaicPyramid(mosaic, node_tol=10.0)
    shape = (0, 0) + cut.level_shape(4)
    depths = np.linspace(-2.0, 2.0, 23)
    worst = {}
    for name, pyr in (("cut", cut), ("uncut", uncut)):
        worst[name] = max(_rel_rms(pyr.region(float(z), 4, shape), fields.region(float(z), 4, shape)) for z in depths)
    nodes = [cut._prepared(t).nodes[4][0] for t in mosaic.layout.tiles()]
    assert all(z.size > 3 and np.all(np.diff(z) > 0) for z in nodes), [z.size for z in nodes]
    assert all(uncut._prepared(t).nodes[4][0].size == 3 for t in mosaic.layout.tiles())
    assert worst["cut"] <= NODE_TOL < worst["uncut"], worst


def test_truncated_component_fields_stay_within_their_bound():
    from napari_fpminr.tiles.pyramid import _truncated

    rng = np.random.default_rng(0)
    n_z, R, n = 9, 6, 500
    sig = 10.0 ** -np.arange(R)  # singular values 1, 0.1, ..., 1e-5
    U = np.linalg.qr(rng.normal(size=(R, R)) + 1j * rng.normal(size=(R, R)))[0]
    V = np.linalg.qr(rng.normal(size=(n, R)) + 1j * rng.normal(size=(n, R)))[0]
    line = (rng.normal(size=(n_z, R)) + 1j * rng.normal(size=(n_z, R))).astype(np.complex64)
    fields = np.linalg.solve(np.linalg.qr(line)[1], U @ np.diag(sig) @ V.conj().T * np.sqrt(n))
    fields = fields.astype(np.complex64)
    rho = np.linalg.norm(np.linalg.qr(line)[1] @ fields) / np.sqrt(n_z)  # RMS norm of the node fields
    for tol, rank in ((3e-3 * np.sqrt(n_z), 3), (3e-4 * np.sqrt(n_z), 4)):
        line2, fields2 = _truncated(line, fields, tol)
        assert line2.shape == (n_z, rank) and fields2.shape == (rank, n)
        for t in rng.uniform(0, n_z - 1, 20):  # any depth: linear interpolation weights, as the z line
            i = min(int(t), n_z - 2)
            w = np.zeros(n_z)
            w[i], w[i + 1] = 1 - (t - i), t - i
            err = np.linalg.norm(w @ line @ fields - w @ line2 @ fields2)
            assert err <= tol * rho * 1.01, (tol, err / rho)


def test_rank_truncation_of_a_mosaic_keeps_the_levels_within_tolerance(tmp_path):
    mosaic = load_mosaic(_small_mosaic(tmp_path / "rank8.fpminr", n_z=17, rank=8))
    exact = MosaicPyramid(mosaic, rank_tol=0.0)
    z = 0.35
    ref = {s: exact.region(z, s, (0, 0) + exact.level_shape(s)) for s in (1, 4)}
    for tol in (1e-4, 3e-3):
        pyr = MosaicPyramid(mosaic, rank_tol=tol)
        full = pyr.region(z, 1, (0, 0) + pyr.level_shape(1))
        ranks = [f.shape[0] for t in mosaic.layout.tiles() for f, _, _ in pyr._prepared(t).folded.values()]
        assert max(ranks) < 8, ranks  # defocus over 4 um needs fewer than 8 terms at these tolerances
        # the bound is tol x (about) the RMS amplitude per tile: the blend of tiles keeps it
        assert _rel_rms(full, ref[1]) <= tol, (tol, _rel_rms(full, ref[1]))
        assert _rel_rms(pyr.region(z, 4, (0, 0) + pyr.level_shape(4)), ref[4]) <= tol + 1e-4
    np.testing.assert_allclose(MosaicPyramid(mosaic).region(z, 1, (0, 0, 100, 120)), ref[1][:100, :120],
                               rtol=1e-4, atol=1e-5)  # the default tolerance: level 0 as exact as before
