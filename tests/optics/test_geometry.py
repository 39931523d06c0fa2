"""LED-board geometry: acquisition orders, azimuth sign, and slab refraction physics."""

import numpy as np
import pytest

from napari_fpminr.optics.geometry import (
    illumination_na,
    led_positions_mm,
    raster_offsets,
    refracted_sine,
    spiral_offsets,
)
from napari_fpminr.optics.led_array import led_grid_na

H_MM, T_MM, N_GLASS = 90.88, 1.0, 1.52


def test_spiral_order_matches_uconn_sequence_and_covers_the_square_once():
    expected = [(0, 0), (1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (2, -1),
                (2, 0), (2, 1), (2, 2)]
    assert [tuple(p) for p in spiral_offsets(13)] == expected
    off = spiral_offsets(225)
    assert len({tuple(p) for p in off}) == 225
    assert off.min() == -7 and off.max() == 7
    assert np.all(np.abs(np.diff(off, axis=0)).sum(axis=1) == 1)  # neighbours: one LED step at a time


def test_raster_order_is_row_by_row_and_centred():
    off = raster_offsets(2, 3)
    np.testing.assert_array_equal(off, [[-1, -0.5], [0, -0.5], [1, -0.5], [-1, 0.5], [0, 0.5], [1, 0.5]])


def test_normal_incidence_has_zero_na_and_no_slab_is_the_plain_geometry():
    assert refracted_sine(np.array([0.0]), H_MM, T_MM, N_GLASS)[0] == 0.0
    lat = np.array([3.0, 17.0, 40.0])
    np.testing.assert_allclose(refracted_sine(lat, H_MM), lat / np.hypot(lat, H_MM), rtol=1e-15)


def test_slab_refraction_bends_far_leds_slightly_and_obeys_snell_geometry():
    lat = np.array([4.0, 20.0, 28.0 * np.sqrt(2), 60.0])
    sin_a = refracted_sine(lat, H_MM, T_MM, N_GLASS)
    plain = lat / np.hypot(lat, H_MM)
    rel = (plain - sin_a) / plain
    assert np.all(rel > 0) and np.all(rel < 0.05)  # the slab takes part of the lateral run
    # the refracted ray from the LED reaches the patch centre: air run + glass run = lateral distance
    sin_g = sin_a / N_GLASS
    run = H_MM * sin_a / np.sqrt(1 - sin_a**2) + T_MM * sin_g / np.sqrt(1 - sin_g**2)
    np.testing.assert_allclose(run, lat, atol=1e-8)
    # a thicker, denser slab bends more
    assert np.all(refracted_sine(lat, H_MM, 3.0, 1.8) < sin_a)


def test_azimuth_sign_and_rotation():
    pos = np.array([[10.0, 0.0], [0.0, 10.0], [-10.0, 0.0]])
    na = illumination_na(pos, H_MM)
    s = 10.0 / np.hypot(10.0, H_MM)
    np.testing.assert_allclose(na, [[-s, 0.0], [0.0, -s], [s, 0.0]], atol=1e-15)
    rotated = led_positions_mm([[1, 0]], pitch_mm=10.0, rotation_deg=90.0)
    np.testing.assert_allclose(rotated, [[0.0, 10.0]], atol=1e-12)


def test_grid_na_uses_centre_offset_and_order():
    na = led_grid_na(15, 4.0, H_MM, centre_mm=(0.0, 0.35), order="spiral", slab_thickness_mm=T_MM,
                     slab_index=N_GLASS)
    absna = np.hypot(na[:, 0], na[:, 1])
    assert na.shape == (225, 2)
    assert absna[0] == pytest.approx(refracted_sine(np.array([0.35]), H_MM, T_MM, N_GLASS)[0])
    assert na[0, 1] < 0 and abs(na[0, 0]) < 1e-15  # first LED 0.35 mm towards +y
    assert 0.38 < absna.max() < 0.42
    with pytest.raises(ValueError, match="square"):
        led_grid_na((3, 5), 4.0, H_MM, order="spiral")
    with pytest.raises(ValueError, match="order"):
        led_grid_na(3, 4.0, H_MM, order="zigzag")
