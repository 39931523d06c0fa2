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


def _iterated_shift(reference, moving, band):
    """Shift (px) of real image ``moving`` against ``reference``: plain correlation in the band, iterated."""
    import torch

    from napari_fpminr.colour.register import fourier_shift, phase_correlation

    total = np.zeros(2)
    m = torch.as_tensor(moving.astype(np.complex64))
    for _ in range(6):
        step = phase_correlation(reference, fourier_shift(m, -total[0], -total[1]).numpy().real, whiten=0.0,
                                 cutoff=band, low_cut=band / 20)
        total += step
        if max(abs(v) for v in step) < 0.005:
            break
    return total


def test_channels_register_on_a_central_crop_as_their_raw_bright_field_frames_do():
    """The colour job's registration of reconstructions on the central 64 px (the crop model's, the focus scan's)
    against a reference no reconstruction touches: the central LED's raw frames. That LED is on the axis for red
    (NA 0) and within NA 0.007 for green and blue, whose best focus is within 2 µm: defocus moves their frames by
    under 0.01 raw px, so the frames' own shift is the channels' lateral registration at the field centre."""
    from napari_fpminr.colour.job import common_grid, order_channels
    from napari_fpminr.colour.register import register_fields
    from napari_fpminr.io import read_raw
    from napari_fpminr.recon.conventional import reconstruct_stack

    raws, _ = order_channels([read_raw(f) for f in FILES])
    grid = common_grid(raws)
    up = grid[0].optics.upsample
    amplitude = [np.sqrt(np.asarray(r.intensities[0], np.float64)) for r in raws]
    band_raw = raws[0].optics.na_obj / raws[0].optics.wavelength_um * raws[0].optics.dx_lr_um  # red's coherent band
    # each channel at its best focus (uncalibrated, docs/benchmarks.md: red -31.2, green +0.5, blue -1.4 um)
    fields = []
    for r, z in zip(grid, (-31.2, 0.5, -1.4), strict=True):
        st = reconstruct_stack(r.crop(32, 32, 64, 64), [z], iterations=10, device="cpu")
        fields.append(st.amplitude[0] * np.exp(1j * st.phase[0]))
    band = min(r.optics.na_synthetic / r.optics.wavelength_um for r in grid) * grid[0].optics.dx_hr_um
    for c in (0, 2):
        frames = _iterated_shift(amplitude[1], amplitude[c], band_raw)
        ours = np.array(register_fields(fields[1], fields[c], band)) / up
        assert np.hypot(*(ours - frames)) <= 0.1, ("RB"[c // 2], ours, frames)
