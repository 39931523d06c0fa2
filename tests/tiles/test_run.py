"""Tiled runs: outputs, resuming after kill -9, a dask LocalCluster, cooperative stop, mosaics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_fpminr.cli import main
from napari_fpminr.io import write_raw
from napari_fpminr.simulate import simulate

FPM_ARGS = ["--method", "fpm", "--z", "-1", "1", "--tile", "32", "--overlap", "8", "--iterations", "4", "-q",
            "--device", "cpu"]


@pytest.fixture(scope="module")
def reference(slide, tmp_path_factory) -> np.lib.npyio.NpzFile:
    out = tmp_path_factory.mktemp("ref") / "ref.npz"
    assert main(["reconstruct", str(slide), "-o", str(out), *FPM_ARGS]) == 0
    return np.load(out)


def _rel(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_tiled_npz_zarr_and_tif_hold_the_same_whole_field(slide, reference, tmp_path):
    import tifffile
    import zarr

    assert reference["amplitude"].shape == (2, 128, 128)
    assert np.isfinite(reference["amplitude"]).all() and 0.3 < reference["amplitude"].mean() < 3
    z = tmp_path / "out.zarr"
    assert main(["reconstruct", str(slide), "-o", str(z), *FPM_ARGS]) == 0
    root = zarr.open_group(str(z), mode="r")
    ms = root.attrs["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["z", "c", "y", "x"] and ms["axes"][0]["unit"] == "micrometer"
    scale = ms["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale[0] == pytest.approx(2.0)  # z spacing in um
    focus = np.asarray(root.attrs["fpminr"]["tile_best_focus_um"], float)
    assert focus.shape == (3, 3) and np.all(np.isin(focus, [-1.0, 1.0]))  # one of the planes per tile
    np.testing.assert_array_equal(root["0"][:, 0], reference["amplitude"])
    np.testing.assert_array_equal(root["0"][:, 1], reference["phase"])
    t = tmp_path / "out.tif"
    assert main(["reconstruct", str(slide), "-o", str(t), *FPM_ARGS]) == 0
    np.testing.assert_array_equal(tifffile.imread(t)[:, 0], reference["amplitude"])
    assert not (tmp_path / "out.tif.tiles").exists()  # removed once the output is written


def test_local_cluster_with_two_workers_gives_the_default_output(slide, reference, tmp_path):
    """The same job through a dask.distributed LocalCluster of 2 processes, addressed like a cluster."""
    from distributed import LocalCluster

    out = tmp_path / "cluster.npz"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as cluster:
        assert main(["reconstruct", str(slide), "-o", str(out), *FPM_ARGS, "--scheduler",
                     cluster.scheduler_address]) == 0
    got = np.load(out)
    assert _rel(got["amplitude"], reference["amplitude"]) <= 1e-5
    assert _rel(got["phase"], reference["phase"]) <= 1e-5


@pytest.mark.slow  # three runs of 9 tiles in subprocesses: ~15 s on an idle 2-core machine, more under load
def test_kill_9_then_rerun_keeps_finished_tiles_and_gives_the_same_output(slide, reference, tmp_path):
    out = tmp_path / "resumed.npz"
    work = tmp_path / "resumed.npz.tiles"
    cmd = [sys.executable, "-m", "napari_fpminr.cli", "reconstruct", str(slide), "-o", str(out), *FPM_ARGS,
           "--iterations", "12", "--keep-tiles"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None and len(list(work.glob("tile_*.json"))) < 2:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    before = {p.name: (p.read_text(), p.stat().st_mtime_ns) for p in work.glob("tile_*.json")}
    assert 2 <= len(before) < 9, "the run should have been killed in the middle"
    assert not out.exists()
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(before)} of 9 kept from an earlier run" in rerun.stderr
    for name, (text, mtime) in before.items():  # not recomputed: same files, untouched
        p = work / name
        assert p.read_text() == text and p.stat().st_mtime_ns == mtime
    uninterrupted = tmp_path / "plain.npz"
    assert main(["reconstruct", str(slide), "-o", str(uninterrupted), *FPM_ARGS, "--iterations", "12"]) == 0
    a, b = np.load(out), np.load(uninterrupted)
    np.testing.assert_array_equal(a["amplitude"], b["amplitude"])
    np.testing.assert_array_equal(a["phase"], b["phase"])


def test_changed_options_recompute_the_tiles(slide, tmp_path):
    out = tmp_path / "o.npz"
    assert main(["reconstruct", str(slide), "-o", str(out), *FPM_ARGS, "--keep-tiles"]) == 0
    first = json.loads((tmp_path / "o.npz.tiles" / "tile_000_000.json").read_text())
    assert main(["reconstruct", str(slide), "-o", str(out), *FPM_ARGS, "--iterations", "3", "--keep-tiles"]) == 0
    second = json.loads((tmp_path / "o.npz.tiles" / "tile_000_000.json").read_text())
    assert first["job_hash"] != second["job_hash"]


def test_step_option_reaches_the_tiles_and_their_hash(slide, reference, tmp_path):
    """Tiles use the adaptive step by default; ``--step constant`` is a different job with a
    different result (the option is not lost on the way to the solver)."""
    out = tmp_path / "c.npz"
    assert main(["reconstruct", str(slide), "-o", str(out), *FPM_ARGS, "--step", "constant", "--keep-tiles"]) == 0
    marker = json.loads((tmp_path / "c.npz.tiles" / "tile_000_000.json").read_text())
    default = tmp_path / "d.npz"
    assert main(["reconstruct", str(slide), "-o", str(default), *FPM_ARGS, "--keep-tiles"]) == 0
    assert marker["job_hash"] != json.loads((tmp_path / "d.npz.tiles" / "tile_000_000.json").read_text())["job_hash"]
    np.testing.assert_array_equal(np.load(default)["amplitude"], reference["amplitude"])
    assert _rel(np.load(out)["amplitude"], reference["amplitude"]) > 1e-3


def test_stop_cancels_the_remaining_tiles_and_keeps_the_finished(slide, tmp_path):
    import threading

    from napari_fpminr.tile_layout import TileLayout
    from napari_fpminr.tiles.run import TiledJob, iter_tiles
    from napari_fpminr.tiles.source import open_source

    src = open_source(slide)
    lay = TileLayout(src.frame_shape, 32, 8, src.header.optics.upsample, src.header.optics.dx_lr_um)
    job = TiledJob(src, lay, "fpm", [0.0], tmp_path / "w", leds=src.header.leds,
                   options={"iterations": 4, "device": "cpu"})
    stop = threading.Event()
    events = []
    for ev in iter_tiles(job, stop=stop):
        events.append(ev)
        if ev.tiles_done >= 1:
            stop.set()
    assert events[-1].stopped and not events[-1].done
    assert 1 <= len(job.finished()) < 9
    again = list(iter_tiles(job))
    assert again[-1].done and again[-1].skipped >= 1 and len(job.finished()) == 9


@pytest.fixture(scope="module")
def small_mosaic(tmp_path_factory) -> Path:
    """An inr mosaic of 32 x 56 raw px in two tiles (one tiled run shared by the mosaic tests)."""
    d = tmp_path_factory.mktemp("mosaic")
    raw_path = d / "small.tif"
    write_raw(simulate("tilted", size=64, seed=0).raw.crop(0, 0, 32, 56), raw_path)
    out = d / "m.fpminr"
    assert main(["reconstruct", str(raw_path), "-o", str(out), "--method", "inr", "--z-min", "-3", "--z-max", "3",
                 "--tile", "32", "--overlap", "8", "-q", "--device", "cpu"]) == 0
    return out


def test_inr_mosaic_renders_any_region_and_level_from_the_tiles_it_needs(small_mosaic, tmp_path):
    from napari_fpminr.io.mosaic_file import is_mosaic, load_mosaic

    out = small_mosaic
    assert is_mosaic(out)
    mosaic = load_mosaic(out)
    assert mosaic.layout.grid_shape == (1, 2) and mosaic.hr_shape == (64, 112)
    assert np.isfinite(mosaic.best_focus_map()).all()
    full_a, full_p = mosaic.render([0.5])
    assert 0.3 < full_a.mean() < 3
    part_a, _ = mosaic.render([0.5], region=(8, 4, 20, 30))  # inside the first tile only
    np.testing.assert_allclose(part_a, full_a[:, 8:28, 4:34], rtol=1e-5, atol=1e-6)
    fresh = load_mosaic(out)
    fresh.render([0.5], region=(8, 4, 20, 30))
    assert fresh.decoded_tiles == 1  # only the tile in view is decoded
    lvl_a, _ = mosaic.render([0.5], step=2)
    np.testing.assert_allclose(lvl_a, full_a[:, ::2, ::2], rtol=1e-5, atol=1e-6)
    r = tmp_path / "r.npz"
    assert main(["render", str(out), "-o", str(r), "--z", "0.5", "--region", "8", "4", "20", "30", "--level", "1"]) == 0
    area = full_a[:, 8:28, 4:34].reshape(1, 10, 2, 15, 2).mean(axis=(2, 4))  # level 1: 2x2 area averages
    np.testing.assert_allclose(np.load(r)["amplitude"], area, rtol=1e-4, atol=1e-5)
    assert main(["render", str(out), "-o", str(tmp_path / "bad.npz"), "--z", "0", "--region", "0", "0", "999", "9"]) == 2


def test_info_describes_a_mosaic(small_mosaic, capsys):
    capsys.readouterr()
    assert main(["info", str(small_mosaic)]) == 0
    text = capsys.readouterr().out
    assert "mosaic" in text and "2 tiles" in text and "32x56 px raw frame" in text and "z -3..3 um" in text


def test_bad_tiled_options_are_one_line_errors(slide, tmp_path, capsys):
    out = str(tmp_path / "x.npz")
    assert main(["reconstruct", str(slide), "-o", out, *FPM_ARGS, "--crop", "0", "0", "32", "32"]) == 2
    assert "--crop and --tile" in capsys.readouterr().err
    assert main(["reconstruct", str(slide), "-o", out, "--method", "fpm", "--z", "0", "--tile", "32",
                 "--overlap", "20"]) == 2
    assert "--overlap" in capsys.readouterr().err
    assert main(["reconstruct", str(slide), "-o", out, *FPM_ARGS, "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err


def test_guard_band_reads_context_around_each_tile_and_keeps_the_tile(slide, reference, tmp_path):
    from napari_fpminr.tile_layout import TileLayout
    from napari_fpminr.tiles.run import TiledJob
    from napari_fpminr.tiles.source import open_source

    src = open_source(slide)
    lay = TileLayout(src.frame_shape, 32, 8, src.header.optics.upsample, src.header.optics.dx_lr_um)
    job = TiledJob(src, lay, "fpm", [0.0], tmp_path / "w", options={"guard": 6})
    assert job.guarded_window(lay.tile_at(0, 0)) == (0, 0, 38, 38)        # clamped at the frame's edge
    assert job.guarded_window(lay.tile_at(1, 1)) == (18, 18, 44, 44)      # 6 px of context on every side
    out = tmp_path / "g.npz"
    assert main(["reconstruct", str(slide), "-o", str(out), *FPM_ARGS, "--guard", "6"]) == 0
    got = np.load(out)["amplitude"]
    assert got.shape == reference["amplitude"].shape and np.isfinite(got).all()
    assert 0.5 < got.mean() / reference["amplitude"].mean() < 2 and not np.array_equal(got, reference["amplitude"])
