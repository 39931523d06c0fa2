"""The real UConn colour set (../shared/data: blood smear red 630, green 532, blue 475 nm); skips without it."""

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FILES = [DATA / f"bloodsmear_{c}.mat" for c in ("red", "green", "blue")]

pytestmark = pytest.mark.skipif(not all(f.is_file() for f in FILES), reason="shared/data not present")


def test_the_three_files_form_one_colour_set_of_one_field():
    from napari_fpminr.colour.job import common_grid, order_channels
    from napari_fpminr.colour.register import phase_correlation
    from napari_fpminr.io import read_raw

    raws = [read_raw(f) for f in (FILES[2], FILES[0], FILES[1])]  # any order
    ordered, order = order_channels(raws)
    assert order == [1, 2, 0]
    assert [r.optics.wavelength_um for r in ordered] == pytest.approx([0.630, 0.532, 0.475])
    assert [r.z_um for r in ordered] == pytest.approx([-55.0, 10.0, -15.0])  # the stated depths, reported beside ours
    grid = common_grid(ordered)
    assert len({r.optics.upsample for r in grid}) == 1 and len({r.hr_shape for r in grid}) == 1
    # one field: the central (bright-field) frames line up within a few raw px
    centre = [r.intensities[0] for r in ordered]
    for c in (0, 2):
        dy, dx = phase_correlation(centre[1], centre[c])
        assert np.hypot(dy, dx) < 3.0
