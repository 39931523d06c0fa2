"""Pupil-edge LEDs: found from the board geometry over a tile, left out of tiles, and why (PSNR)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_fpminr.optics.slide import slide_optics
from napari_fpminr.recon.conventional import reconstruct_stack
from napari_fpminr.recon.metrics import psnr_scaled
from napari_fpminr.simulate import simulate
from napari_fpminr.tile_layout import TileLayout
from napari_fpminr.optics.pupil_edge import pupil_edge_leds
from napari_fpminr.tiles.local_na import corner_points_mm
from napari_fpminr.tiles.run import TiledJob
from napari_fpminr.tiles.source import MemorySource


def test_pupil_edge_leds_flags_only_leds_whose_na_meets_the_pupil_edge_over_the_window():
    na_obj, bin_na = 0.15, 0.004
    s = np.array([0.0, 0.10, 0.147, 0.153, 0.160, 0.20])
    na = np.stack([s, np.zeros_like(s)], axis=1)[None]  # one point (no board geometry)
    assert pupil_edge_leds(na, na_obj, bin_na).tolist() == [False, False, True, True, False, False]
    # seen from a window corner, the 0.160 LED comes down to 0.152: within one bin of the edge
    spread = np.concatenate([na, na - np.array([0.008, 0.0])], axis=0)
    assert pupil_edge_leds(spread, na_obj, bin_na).tolist() == [False, False, True, True, True, False]
    pts = corner_points_mm((1.0, -2.0), (0.5, 0.25))
    assert pts.shape == (5, 2) and pts[0].tolist() == [1.0, -2.0] and pts[:, 0].min() == 0.5 and pts[:, 1].max() == -1.75


@pytest.fixture(scope="module")
def slide_256():
    optics, leds = slide_optics()
    return simulate("slide", size=256, seed=1, optics=optics, leds=leds, device="cpu", tilt_um_per_mm=(0.0, 0.0),
                    curvature_um_per_mm2=0.0)


def test_tiled_job_leaves_out_the_pupil_edge_leds_of_each_tile(slide_256, tmp_path):
    raw = slide_256.raw
    o = raw.optics
    layout = TileLayout(raw.lr_shape, 128, 16, o.upsample, o.dx_lr_um)
    job = TiledJob(MemorySource.from_raw(raw), layout, "fpm", [0.0], tmp_path, leds=raw.leds)
    tile = layout.tile_at(0, 0)
    kept = job.kept_leds(tile)
    na = np.hypot(*job.tile_na(tile).T)
    dropped = np.setdiff1d(np.arange(raw.n_leds), kept)
    # the slide's board (2 mm pitch, 30 mm): the 8 LEDs at |NA| 0.147 against NA_obj 0.15, nothing else
    assert dropped.size == 8 and np.all(np.abs(na[dropped] - o.na_obj) < 0.005)
    assert np.all(np.abs(na[kept] - o.na_obj) > 0.01)
    assert job.task(tile).keep_leds.tolist() == kept.tolist()
    keep_all = TiledJob(MemorySource.from_raw(raw), layout, "fpm", [0.0], tmp_path, leds=raw.leds,
                        options={"edge_leds": "keep"})
    assert keep_all.kept_leds(tile) is None and keep_all.job_hash != job.job_hash


def _window_psnr(sim, raw, size: int) -> tuple[float, float]:
    """PSNR of a centred ``size`` window's reconstruction: (whole window, its outer 16 raw px)."""
    S = raw.lr_shape[0]
    top = (S - size) // 2
    # 5 passes: the margins are those of 10 (measured all LEDs 25.6 dB / rim 28.4, without the edge
    # LEDs 35.7 / 32.9 at 4, 6 and 10 passes alike)
    stack = reconstruct_stack(raw.crop(top, top, size, size), [0.0], iterations=5, device="cpu")
    up = raw.optics.upsample
    truth = sim.truth.amplitude[0][top * up:(top + size) * up, top * up:(top + size) * up]
    a = stack.amplitude[0]
    rim = np.ones_like(a, bool)
    rim[16 * up:-16 * up, 16 * up:-16 * up] = False
    return psnr_scaled(a, truth), psnr_scaled(a[rim], truth[rim])


def test_leaving_out_pupil_edge_leds_removes_the_tile_edge_loss_under_spherical_illumination(slide_256):
    """A 128 px window of a field lit by spherical waves (LEDs 30 mm away): with the pupil-edge
    LEDs its reconstruction loses several dB, most at its edges; without them it does not."""
    raw = slide_256.raw.with_optics(na_illum=slide_256.raw.leds.na_at((0.0, 0.0)), pupil=None)
    na = np.hypot(*raw.optics.na_illum.T)
    clean = raw.select_leds(np.flatnonzero(np.abs(na - raw.optics.na_obj) > 0.01))
    all_db, all_rim = _window_psnr(slide_256, raw, 128)
    clean_db, clean_rim = _window_psnr(slide_256, clean, 128)
    print(f"128 px window: all LEDs {all_db:.2f} dB (rim {all_rim:.2f}), without pupil-edge LEDs "
          f"{clean_db:.2f} dB (rim {clean_rim:.2f})")
    assert clean_db > all_db + 3.0
    assert clean_rim > all_rim + 3.0
    assert clean_db > 30.0


@pytest.mark.parametrize("corner", [(0, 0), (1, 1)])
def test_adaptive_step_keeps_a_tile_from_taking_its_last_leds_misfit(slide_256, tmp_path, corner):
    """A tile's images never fit its model exactly (each point sees every LED from its own place).
    With a constant unit step each LED's update writes its own image's misfit into the spectrum and
    the last bright-field LEDs have the final word; halving the step when a pass stalls (Zuo et al.
    2016) lets the passes average it out. Same tile, same LEDs, its own NAs."""
    raw = slide_256.raw
    o = raw.optics
    layout = TileLayout(raw.lr_shape, 128, 16, o.upsample, o.dx_lr_um)
    job = TiledJob(MemorySource.from_raw(raw), layout, "fpm", [0.0], tmp_path, leds=raw.leds)
    tile = layout.tile_at(*corner)
    data = raw.crop(*tile.window).with_optics(na_illum=job.tile_na(tile), pupil=None).select_leds(job.kept_leds(tile))
    T, L, h, w = layout.hr_window(tile)
    m = 8 * o.upsample
    truth = slide_256.truth.amplitude[0][T:T + h, L:L + w][m:-m, m:-m]
    scores = [psnr_scaled(reconstruct_stack(data, [0.0], iterations=10, device="cpu", adaptive_step=a)
                          .amplitude[0][m:-m, m:-m], truth) for a in (False, True)]
    print(f"tile {corner}: constant step {scores[0]:.2f} dB, adaptive {scores[1]:.2f} dB")
    assert scores[1] > scores[0] + 2.0  # measured +4.0 and +3.3 dB at 10 passes (+4.7, +3.9 at 15; +2.6, +2.2 at 8)
