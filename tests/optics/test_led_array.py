"""LED board geometry: NAs at the field centre and off axis, subsets, and the native round trip."""

import numpy as np
import pytest

from napari_fpminr.io import read_raw, write_raw
from napari_fpminr.optics.led_array import led_grid_na
from napari_fpminr.optics.led_array import LEDArray
from napari_fpminr.simulate import simulate


def test_centre_na_matches_the_grid_formula():
    board = LEDArray.grid(5, 4.0, 80.0, order="spiral", centre_mm=(0.3, -0.2), rotation_deg=1.5,
                          slab_thickness_mm=1.0, slab_index=1.52)
    expected = led_grid_na(5, 4.0, 80.0, centre_mm=(0.3, -0.2), order="spiral", rotation_deg=1.5,
                           slab_thickness_mm=1.0, slab_index=1.52)
    np.testing.assert_allclose(board.na_at(), expected, atol=1e-12)


def test_an_off_axis_field_point_sees_the_board_shifted():
    """A point 1.3 mm off centre, 90 mm above the board: the central LED's NA is ~-(1.3/90)."""
    board = LEDArray(offsets=np.zeros((1, 2)), pitch_mm=4.0, distance_mm=90.0)
    na = board.na_at((1.3, 0.0))[0]
    assert na[0] == pytest.approx(1.3 / np.hypot(1.3, 90.0), rel=1e-9)  # LED at -1.3 mm: na_x = +sin
    assert abs(na[1]) < 1e-15


def test_sorting_keeps_images_and_geometry_together():
    raw = simulate(size=16).raw
    sorted_raw = raw.sorted_by_na()
    np.testing.assert_allclose(sorted_raw.leds.na_at(), sorted_raw.optics.na_illum, atol=1e-12)


def test_native_files_keep_the_board(tmp_path):
    raw = simulate(size=16).raw
    back = read_raw(write_raw(raw, tmp_path / "s.tif"))
    assert back.leds is not None
    np.testing.assert_allclose(back.leds.offsets, raw.leds.offsets)
    assert back.leds.distance_mm == raw.leds.distance_mm


def test_a_malformed_description_is_one_clear_error():
    with pytest.raises(ValueError, match="lacks 'pitch_mm'"):
        LEDArray.from_dict({"offsets": [[0, 0]], "distance_mm": 3})
    with pytest.raises(ValueError, match="positive"):
        LEDArray.from_dict({"offsets": [[0, 0]], "pitch_mm": -1, "distance_mm": 3})
