"""Issue 22: tiled runs trust nothing on disk, never go silent, open no ports, leave only what resume needs."""

from __future__ import annotations

import json
import os
import shutil
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

ARGS = ["--method", "fpm", "--z", "-1", "1", "--tile", "32", "--overlap", "8", "--iterations", "2", "-q",
        "--device", "cpu"]


@pytest.fixture(scope="module")
def clean(slide, tmp_path_factory) -> tuple[Path, dict]:
    """A clean run's output and its tiles folder (kept)."""
    out = tmp_path_factory.mktemp("clean") / "c.npz"
    assert main(["reconstruct", str(slide), "-o", str(out), *ARGS, "--keep-tiles"]) == 0
    return out, dict(np.load(out))


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("fpminr: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def _run_again(slide, clean, tmp_path, damage, capsys) -> tuple[dict, str]:
    """Copy the clean tiles folder, damage it, resume; returns the output and stderr."""
    out = tmp_path / "c.npz"
    shutil.copytree(clean[0].with_name("c.npz.tiles"), tmp_path / "c.npz.tiles")
    damage(tmp_path / "c.npz.tiles")
    capsys.readouterr()
    assert main(["reconstruct", str(slide), "-o", str(out), *ARGS]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return dict(np.load(out)), err


def _flip(path: Path, n: int = 64, seed: int = 0) -> None:
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    for i in rng.integers(len(data) // 2, len(data), n):  # in the tensor data, past the header
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damaged_and_foreign_tiles_are_recomputed_with_one_warning(slide, clean, tmp_path, capsys):
    def damage(work: Path) -> None:
        _flip(work / "tile_001_001.safetensors")                                          # flipped bytes
        shutil.copy(work / "tile_000_000.safetensors", work / "tile_000_001.safetensors")  # a tile over another
        p = work / "tile_002_002.safetensors"
        p.write_bytes(p.read_bytes()[:200])                                                # truncated

    got, err = _run_again(slide, clean, tmp_path, damage, capsys)
    warnings = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and "3 finished tile(s) failed their check" in warnings[0], err
    np.testing.assert_array_equal(got["amplitude"], clean[1]["amplitude"])
    np.testing.assert_array_equal(got["phase"], clean[1]["phase"])


def test_a_marker_naming_a_file_outside_the_tiles_folder_is_not_read(slide, clean, tmp_path, capsys):
    from napari_fpminr.tiles.worker import file_sha256

    elsewhere = tmp_path / "elsewhere.safetensors"

    def damage(work: Path) -> None:
        shutil.copy(work / "tile_001_000.safetensors", elsewhere)
        _flip(elsewhere, seed=1)
        marker = json.loads((work / "tile_001_000.json").read_text())
        marker.update(file=str(elsewhere), sha256=file_sha256(elsewhere))
        (work / "tile_001_000.json").write_text(json.dumps(marker))
        marker = json.loads((work / "tile_000_002.json").read_text())
        marker["amplitude_scale"] = float("nan")  # a number copied into the output unchecked before
        (work / "tile_000_002.json").write_text(json.dumps(marker))

    got, err = _run_again(slide, clean, tmp_path, damage, capsys)
    assert "2 finished tile(s) failed their check" in err
    np.testing.assert_array_equal(got["amplitude"], clean[1]["amplitude"])


def _calibration_file(path: Path, slide: Path, **changes) -> Path:
    from napari_fpminr.calib.model import Calibration
    from napari_fpminr.cli.calibrate import _fingerprint
    from napari_fpminr.io import read_raw
    from napari_fpminr.io.calibration_file import write_calibration

    raw = read_raw(slide)
    cal = Calibration.identity(raw, **changes)
    return write_calibration(cal.replace(report={"data": _fingerprint(raw)}), path)


def test_calibration_reaches_every_tile_and_the_job_hash(slide, clean, tmp_path, capsys):
    cal = _calibration_file(tmp_path / "s.calib.json", slide, background=0.02, rotation_deg=1.0)
    out = tmp_path / "cal.npz"
    assert main(["reconstruct", str(slide), "-o", str(out), *ARGS, "--calibration", str(cal), "--keep-tiles"]) == 0
    marker = json.loads((tmp_path / "cal.npz.tiles" / "tile_001_001.json").read_text())
    assert marker["job_hash"] != json.loads((clean[0].with_name("c.npz.tiles") / "tile_001_001.json")
                                            .read_text())["job_hash"]
    got = np.load(out)["amplitude"]
    assert np.isfinite(got).all() and np.abs(got - clean[1]["amplitude"]).max() > 1e-3
    capsys.readouterr()
    assert main(["reconstruct", str(slide), "-o", str(tmp_path / "x.npz"), *ARGS, "--calibration",
                 str(tmp_path / "missing.calib.json")]) == 2
    assert "calibration file not found" in _one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "x.npz.tiles").exists()


def test_a_calibration_of_other_data_is_refused_unless_forced(slide, tmp_path, capsys):
    other = tmp_path / "other.tif"
    write_raw(simulate("tilted", size=64, seed=4).raw, other)  # same LEDs and size, other content
    cal = _calibration_file(tmp_path / "o.calib.json", other, background=0.01)
    out = tmp_path / "o.npz"
    assert main(["reconstruct", str(slide), "-o", str(out), *ARGS, "--calibration", str(cal)]) == 2
    assert "made for other data" in _one_line_error(capsys.readouterr().err)
    assert main(["reconstruct", str(slide), "-o", str(out), "--method", "fpm", "--z", "0", "--iterations", "1",
                 "-q", "--device", "cpu", "--calibration", str(cal)]) == 2  # also without --tile
    assert "made for other data" in _one_line_error(capsys.readouterr().err)
    assert main(["reconstruct", str(slide), "-o", str(out), *ARGS, "--calibration", str(cal),
                 "--force-calibration"]) == 0
    assert "applied anyway" in capsys.readouterr().err


def test_calibrate_with_tiles_fits_once_on_a_central_window_and_changes_the_job(slide, clean, tmp_path,
                                                                               monkeypatch, capsys):
    """``--calibrate --tile`` fits once, on the central ``--calib-crop`` window, before the tiles; the fit
    itself is replaced by a fixed calibration here (tests/calib covers the fitting)."""
    from napari_fpminr.calib.model import Calibration
    from napari_fpminr.cli import calibrate as calibrate_cli

    seen = []

    def fit(args, raw, quiet):
        seen.append((raw.lr_shape, raw.n_leds))
        return Calibration.identity(raw, background=0.02, rotation_deg=1.0)

    monkeypatch.setattr(calibrate_cli, "_fit", fit)
    out = tmp_path / "fit.npz"
    assert main(["reconstruct", str(slide), "-o", str(out), *ARGS, "--calibrate", "--calib-crop", "24",
                 "--keep-tiles"]) == 0
    assert seen == [((24, 24), 69)]
    assert capsys.readouterr().err.count("background    0.02") == 1
    marker = json.loads((tmp_path / "fit.npz.tiles" / "tile_000_000.json").read_text())
    assert marker["job_hash"] != json.loads((clean[0].with_name("c.npz.tiles") / "tile_000_000.json")
                                            .read_text())["job_hash"]
    assert np.abs(np.load(out)["amplitude"] - clean[1]["amplitude"]).max() > 1e-3


def test_limits_hold_for_tiled_runs_before_any_tile(slide, tmp_path, capsys):
    out = tmp_path / "l.npz"
    for flag in ("--max-output", "--max-memory"):
        assert main(["reconstruct", str(slide), "-o", str(out), *ARGS, flag, "1K"]) == 2
        assert flag in _one_line_error(capsys.readouterr().err)
        assert not out.exists() and not (tmp_path / "l.npz.tiles").exists()


def test_unreachable_scheduler_fails_fast_and_leaves_nothing(slide, tmp_path, capsys):
    out = tmp_path / "u.npz"
    assert main(["reconstruct", str(slide), "-o", str(out), *ARGS, "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "cannot reach the dask scheduler at tcp://127.0.0.1:1" in _one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "u.npz.tiles").exists() and not list(tmp_path.glob(".u.npz*"))


@pytest.mark.timeout(120)
def test_no_worker_is_one_line_after_the_timeout_not_a_hang(slide, tmp_path, capsys):
    from distributed import LocalCluster

    out = tmp_path / "n.npz"
    with LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address=None,
                      silence_logs=40) as cluster:
        assert main(["reconstruct", str(slide), "-o", str(out), *ARGS, "--scheduler", cluster.scheduler_address,
                     "--scheduler-timeout", "1"]) == 2
    err = capsys.readouterr().err
    assert "no dask worker is available" in err
    assert "no dask worker was available" in _one_line_error(err)
    assert not (tmp_path / "n.npz.tiles").exists()  # no folder holding only job.json


def test_a_lost_scheduler_is_one_line_naming_it():
    from napari_fpminr.errors import FPMInputError
    from napari_fpminr.tiles.run import _Dask

    class LostClient:  # what distributed's client reports once its scheduler is gone
        status = "connecting"

    pool = _Dask(LostClient(), None, "tcp://10.0.0.9:8786", None, 5.0)
    with pytest.raises(FPMInputError, match="lost the dask scheduler at tcp://10.0.0.9:8786") as info:
        pool.wait(set(), 0.1)
    assert "\n" not in str(info.value)


def _listening(procs) -> list:
    import psutil

    out = []
    for p in procs:
        try:
            out += [c.laddr for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            pass
    return out


def _alive(procs) -> list:
    """The processes still running (children come and go while a cluster starts)."""
    import psutil

    alive = []
    for p in procs:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.Error:
            pass
    return alive


def test_an_in_process_tiled_run_listens_on_no_socket(slide, tmp_path):
    import psutil

    from napari_fpminr.tile_layout import TileLayout
    from napari_fpminr.tiles.run import TiledJob, iter_tiles
    from napari_fpminr.tiles.source import open_source

    src = open_source(slide)
    lay = TileLayout(src.frame_shape, 32, 8, src.header.optics.upsample, src.header.optics.dx_lr_um)
    job = TiledJob(src, lay, "fpm", [0.0], tmp_path / "w", leds=src.header.leds, options={"iterations": 1})
    seen = []
    for ev in iter_tiles(job):
        if ev.tiles_done >= 1 and not ev.done:
            seen.append(_listening([psutil.Process()]))
    assert seen and all(s == [] for s in seen), seen


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_worker_processes_listen_on_loopback_only_and_die_with_a_killed_run(slide, tmp_path, capsys):
    """``--workers 2``, killed with SIGKILL mid-run: its sockets were all on 127.0.0.1, its workers end
    with it, and the rerun takes over the lock the killed run left and finishes with nothing left over."""
    import psutil

    out = tmp_path / "w.npz"
    cmd = [sys.executable, "-m", "napari_fpminr.cli", "reconstruct", str(slide), "-o", str(out), *ARGS,
           "--iterations", "30", "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent = psutil.Process(proc.pid)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and \
                not list((tmp_path / "w.npz.tiles").glob("tile_*.json")):
            time.sleep(0.05)
        try:
            children = _alive(parent.children(recursive=True))
        except psutil.Error:
            children = []
        listening = _listening([parent, *children])
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run should have been killed in the middle"
    assert listening and all(a.ip in ("127.0.0.1", "::1") for a in listening), listening
    workers = _alive(children)
    assert workers
    gone, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive, f"worker processes outlived the killed run: {alive}"
    lock = tmp_path / ".w.npz.lock"
    assert lock.read_text().strip() == str(proc.pid)  # the killed run's lock names it
    assert main(["reconstruct", str(slide), "-o", str(out), *ARGS]) == 0  # other options: tiles recomputed
    assert out.exists() and not lock.exists() and not (tmp_path / "w.npz.tiles").exists()


def test_a_damaged_single_model_with_region_says_what_is_wrong(tmp_path, capsys):
    bad = tmp_path / "bad.fpminr"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    assert main(["render", str(bad), "-o", str(tmp_path / "r.npz"), "--z", "0", "--region", "0", "0", "4", "4"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "--region and --level are for mosaic" not in line and "bad.fpminr" in line
