"""Tile grid, tile centres in mm, blending weights (sum to 1, smooth), illumination NAs per tile."""

from __future__ import annotations

import numpy as np
import pytest

from napari_fpminr.errors import FPMInputError
from napari_fpminr.optics.led_array import LEDArray
from napari_fpminr.tile_layout import TileLayout, axis_starts
from napari_fpminr.tiles.local_na import leds_from_na, local_na, tile_leds


@pytest.mark.parametrize("n,tile,overlap", [(1024, 128, 16), (300, 128, 16), (100, 128, 16), (257, 64, 32),
                                            (128, 128, 0)])
def test_tiles_cover_the_frame_with_equal_tiles_and_the_last_on_the_edge(n, tile, overlap):
    starts = axis_starts(n, tile, overlap)
    size = min(tile, n)
    assert starts[0] == 0 and starts[-1] + size == n
    assert all(b > a for a, b in zip(starts, starts[1:]))
    # consecutive tiles overlap by at least the requested overlap (the last may overlap more)
    assert all(a + size - b >= overlap for a, b in zip(starts, starts[1:]))


def _accumulate(layout: TileLayout) -> np.ndarray:
    total = np.zeros(layout.hr_shape)
    for t in layout.tiles():
        top, left, h, w = layout.hr_window(t)
        total[top:top + h, left:left + w] += layout.weight(t)
    return total


@pytest.mark.parametrize("frame,tile,overlap,up", [((256, 200), 64, 16, 2), ((96, 96), 32, 8, 2),
                                                   ((150, 70), 48, 24, 3), ((40, 40), 64, 8, 2)])
def test_blending_weights_sum_to_one_everywhere(frame, tile, overlap, up):
    layout = TileLayout(frame, tile, overlap, up, 0.345)
    np.testing.assert_allclose(_accumulate(layout), 1.0, atol=1e-6)


def test_blending_is_a_smooth_ramp_across_the_overlap_and_zero_at_the_tile_edge():
    layout = TileLayout((256, 256), 64, 16, 2, 0.345)
    t = layout.tile_at(1, 1)
    w = layout.weight(t)
    row = w[w.shape[0] // 2]
    assert row[0] == 0 and row[-1] == 0           # the outermost quarter of the overlap is left out
    assert row[w.shape[1] // 2] == pytest.approx(1.0)
    assert np.abs(np.diff(row)).max() < 0.2        # no step: a ramp over the overlap's middle
    single = TileLayout((256, 256), 256, 16, 2, 0.345)
    assert single.n_tiles == 1 and np.all(single.weight(single.tile_at(0, 0)) == 1)


def test_tile_centre_in_mm_from_the_frame_centre():
    # 2048 px frame, 3.45 um camera pixels at 4x: 0.8625 um per raw pixel
    layout = TileLayout((2048, 2048), 256, 32, 4, 3.45 / 4)
    first = layout.tile_at(0, 0)
    x, y = layout.centre_mm(first)
    expect = (128 - 1024) * 0.8625e-3
    assert x == pytest.approx(expect) and y == pytest.approx(expect)
    last = layout.tile_at(0, layout.grid_shape[1] - 1)  # top right: +x, -y
    x, y = layout.centre_mm(last)
    assert x == pytest.approx(-expect) and y == pytest.approx(expect)


def test_tiles_touching_a_region():
    layout = TileLayout((256, 256), 64, 16, 2, 0.345)
    names = {(t.row, t.col) for t in layout.tiles_touching(0, 0, 10, 10)}
    assert names == {(0, 0)}
    names = {(t.row, t.col) for t in layout.tiles_touching(100, 100, 2, 2)}  # hr 100 = raw 50: in tiles 0 and 1
    assert names == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_bad_tile_or_overlap_is_a_one_line_error():
    with pytest.raises(FPMInputError, match="--tile"):
        TileLayout((256, 256), 8, 0, 2, 0.345)
    with pytest.raises(FPMInputError, match="--overlap"):
        TileLayout((256, 256), 64, 40, 2, 0.345)


def test_local_na_shift_off_axis_matches_the_geometry():
    """A point 1.3 mm off centre, 90 mm below the board: the NAs shift by about 1.3/90 ≈ 0.014."""
    leds = LEDArray.grid(15, 4.0, 90.0)
    centre = local_na(leds, (0.0, 0.0), None)
    off = local_na(leds, (1.3, 0.0), None)
    shift = off - centre
    mid = np.argmin(np.hypot(*centre.T))  # the LED on the axis
    assert shift[mid, 0] == pytest.approx(1.3 / np.hypot(1.3, 90.0), rel=1e-9)
    assert np.all(np.abs(shift[:, 0]) > 0.012) and np.all(np.abs(shift[:, 1]) < 2e-3)


def test_leds_from_na_and_distance_give_back_the_file_nas_and_the_right_local_shift():
    board = LEDArray.grid(9, 4.0, 70.0, centre_mm=(0.3, -0.2))
    na = board.na_at((0.0, 0.0))
    rebuilt = leds_from_na(na, 70.0, pitch_mm=4.0)
    np.testing.assert_allclose(rebuilt.na_at((0.0, 0.0)), na, atol=1e-12)
    np.testing.assert_allclose(rebuilt.na_at((1.0, 0.5)), board.na_at((1.0, 0.5)), atol=1e-12)


def test_tile_leds_prefers_the_file_geometry_and_needs_a_distance_otherwise():
    from napari_fpminr.simulate import simulate

    raw = simulate("single", size=16).raw
    assert tile_leds(raw) is raw.leds
    bare = raw.__class__(raw.intensities, raw.optics)
    assert tile_leds(bare) is None
    assert tile_leds(bare, distance_mm=70.0) is not None
    np.testing.assert_allclose(local_na(None, (1.0, 1.0), raw.optics.na_illum), raw.optics.na_illum)
    with pytest.raises(FPMInputError, match="led-distance"):
        leds_from_na(raw.optics.na_illum, -1.0)
