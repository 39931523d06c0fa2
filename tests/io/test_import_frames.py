"""``fpminr import`` / io/frames.py: a folder of frames plus a board become a native data set.

A synthetic acquisition (random frames with a few saturated pixels) is written as PNG (8/16-bit)
and TIFF (multi-page, single files), imported, and read back with ``read_raw``: the intensities,
the NAs and the valid mask match what was written. Bad input ends with one line naming the
file, exit code 2 and nothing written. Simulated files are told from measurements.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_fpminr.cli import main
from napari_fpminr.errors import FPMInputError
from napari_fpminr.io import read_raw, write_raw
from napari_fpminr.io import frames as frames_mod
from napari_fpminr.io.frames import BoardSpec, grid_offsets, import_frames, looks_like_frames_folder, natural_key
from napari_fpminr.optics.geometry import illumination_na, raster_offsets

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
OPTICS = dict(wavelength_um=0.532, na_obj=0.1, mag=3.0, pixel_um=3.45)
OPTICS_ARGS = ["--wavelength-um", "0.532", "--na-obj", "0.1", "--mag", "3", "--pixel-um", "3.45"]
ROWS, COLS = 3, 4                     # 12 frames: image10..image12 sort after image9 only naturally
H, W = 10, 14


def acquisition(dtype=np.uint8, seed=0) -> np.ndarray:
    """(12, H, W) frames; frame 0 carries saturated pixels (the integer type's maximum)."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.uniform(0.0, 50.0, (ROWS * COLS, H, W)).astype(dtype)
    top = np.iinfo(dtype).max
    stack = rng.integers(5, top // 2, (ROWS * COLS, H, W)).astype(dtype)
    stack[0, :2, :3] = top
    return stack


def write_pngs(folder: Path, stack: np.ndarray, stem: str = "image") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}{i + 1}.png" for i in range(len(stack))]
    for path, frame in zip(paths, stack):
        Image.fromarray(frame).save(path)
    return paths


def write_csv(path: Path, positions_mm: np.ndarray) -> Path:
    path.write_text("x_mm,y_mm\n" + "".join(f"{x},{y}\n" for x, y in positions_mm), encoding="utf-8")
    return path


def board_positions() -> np.ndarray:
    """A 3x4 board at 6 mm pitch, turned and shifted a little: positions no grid shortcut gives."""
    pos = raster_offsets(ROWS, COLS) * 6.0
    return pos @ np.array([[0.995, 0.1], [-0.1, 0.995]]) + np.array([0.7, -0.4])


def leftovers(folder: Path) -> list[str]:
    """Output files and temporaries of our writers in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(("out", ".out")))


# ---- ordering and board shortcuts ------------------------------------------------------------
def test_natural_order():
    names = ["image10.png", "image2.png", "image1.png", "Image3.png"]
    assert sorted(names, key=natural_key) == ["image1.png", "image2.png", "Image3.png", "image10.png"]


@pytest.mark.parametrize("order", ["raster", "serpentine", "column", "column-serpentine"])
def test_grid_orders_visit_every_led_once(order):
    off = grid_offsets(3, 4, order)
    assert sorted(map(tuple, off)) == sorted(map(tuple, raster_offsets(3, 4)))
    steps = np.abs(np.diff(off, axis=0)).sum(axis=1)
    if "serpentine" in order:                       # boustrophedon: always a neighbour next
        assert np.all(steps == 1)


def test_grid_order_directions():
    np.testing.assert_array_equal(grid_offsets(2, 3, "raster")[:4], [[-1, -0.5], [0, -0.5], [1, -0.5], [-1, 0.5]])
    np.testing.assert_array_equal(grid_offsets(2, 3, "serpentine")[3], [1, 0.5])
    np.testing.assert_array_equal(grid_offsets(2, 3, "column")[:3], [[-1, -0.5], [-1, 0.5], [0, -0.5]])
    spiral = grid_offsets(5, 5, "spiral")
    np.testing.assert_array_equal(spiral[:3], [[0, 0], [1, 0], [1, 1]])   # from the centre LED
    assert sorted(map(tuple, spiral)) == sorted(map(tuple, raster_offsets(5, 5)))
    even = grid_offsets(4, 4, "spiral")
    assert sorted(map(tuple, even)) == sorted(map(tuple, raster_offsets(4, 4)))


# ---- round trips -----------------------------------------------------------------------------
def test_png8_glob_and_csv_round_trip_through_the_cli(tmp_path):
    """The exact command line of the issue, as a user runs it (a subprocess)."""
    stack = acquisition(np.uint8)
    write_pngs(tmp_path / "frames", stack)
    (tmp_path / "frames" / "notes.txt").write_text("not picked by the pattern")
    csv = write_csv(tmp_path / "leds.csv", board_positions())
    out = tmp_path / "OUT.tif"
    proc = subprocess.run([sys.executable, "-m", "napari_fpminr.cli", "import", str(tmp_path / "frames" / "image*.png"),
                           "-o", str(out), "--led-positions", str(csv), "--led-distance-mm", "180", *OPTICS_ARGS],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "12 from 12 file(s)" in proc.stdout and "level 255" in proc.stdout
    assert f"fpminr info {out} --check" in proc.stdout and "fpminr reconstruct" in proc.stdout
    assert tifffile.imread(out).dtype == np.uint8                 # raw values, own data type
    raw = read_raw(out)
    np.testing.assert_array_equal(raw.intensities, stack.astype(np.float32))
    np.testing.assert_array_equal(raw.valid, stack < 255)
    np.testing.assert_allclose(raw.optics.na_illum, illumination_na(board_positions(), 180.0), atol=1e-12)
    np.testing.assert_allclose(raw.leds.positions_mm(), board_positions(), atol=1e-12)
    assert raw.meta["acquisition"] == "measured" and raw.meta["saturation_level"] == 255
    assert not raw.is_simulated
    assert raw.optics.wavelength_um == 0.532 and raw.optics.mag == 3.0


def test_png16_grid_and_dark_level(tmp_path):
    stack = acquisition(np.uint16, seed=1)
    write_pngs(tmp_path / "f", stack)
    board = BoardSpec(distance_mm=90.0, grid=(ROWS, COLS), pitch_mm=4.0, order="serpentine", centre_mm=(1.0, -2.0))
    result = import_frames(tmp_path / "f", tmp_path / "out.tif", board, dark_level=100.0, **OPTICS)
    assert result.saturation_level == 65535 and result.dtype == np.uint16
    raw = read_raw(tmp_path / "out.tif")
    np.testing.assert_array_equal(raw.intensities, np.clip(stack.astype(np.float32) - 100.0, 0, None))
    np.testing.assert_array_equal(raw.valid, stack < 65535)       # on the raw values, before subtraction
    positions = (grid_offsets(ROWS, COLS, "serpentine") * 4.0 + [1.0, -2.0])
    np.testing.assert_allclose(raw.optics.na_illum, illumination_na(positions, 90.0), atol=1e-12)
    assert raw.meta["dark_level"] == 100.0
    side = json.loads((tmp_path / "out.json").read_text())
    assert side["import"]["count"] == 12 and side["acquisition"] == "measured"


def test_multipage_tiffs_in_page_order_and_explicit_saturation(tmp_path):
    stack = acquisition(np.uint16, seed=2)
    folder = tmp_path / "tiffs"
    folder.mkdir()
    tifffile.imwrite(folder / "run10.tif", stack[5:], photometric="minisblack")   # natural order: run2 first
    tifffile.imwrite(folder / "run2.tif", stack[:5], photometric="minisblack")
    board = BoardSpec(distance_mm=50.0, grid=(ROWS, COLS), pitch_mm=3.0)
    result = import_frames(folder, tmp_path / "out.tif", board, saturation_level=30000, **OPTICS)
    assert result.n_frames == 12 and len(result.files) == 2
    raw = read_raw(tmp_path / "out.tif")
    np.testing.assert_array_equal(raw.intensities, stack.astype(np.float32))
    np.testing.assert_array_equal(raw.valid, stack < 30000)
    assert np.isclose(result.stats.saturated[0], np.mean(stack[0] >= 30000))
    assert "12-bit" not in result.summary()


def test_a_12_bit_camera_is_pointed_out(tmp_path):
    stack = np.minimum(acquisition(np.uint16, seed=5), 4095)
    stack[1, 0, 0] = 4095
    folder = tmp_path / "cam12"
    folder.mkdir()
    tifffile.imwrite(folder / "all.tif", stack, photometric="minisblack")
    result = import_frames(folder, tmp_path / "out.tif", BoardSpec(50.0, grid=(ROWS, COLS), pitch_mm=3.0), **OPTICS)
    assert "--saturation 4095" in result.summary()
    assert "all.tif" in result.summary()


def test_float_tiff_files_with_a_dark_frame(tmp_path):
    stack = acquisition(np.float32, seed=3)
    folder = tmp_path / "float"
    folder.mkdir()
    for i, frame in enumerate(stack):
        tifffile.imwrite(folder / f"f_{i}.tiff", frame)
    dark = np.full((H, W), 2.0, np.float32)
    dark[0, 0] = 60.0
    tifffile.imwrite(tmp_path / "dark.tif", dark)
    board = BoardSpec(distance_mm=60.0, grid=(ROWS, COLS), pitch_mm=3.0, order="column")
    result = import_frames(folder, tmp_path / "out.tif", board, dark_frame=tmp_path / "dark.tif", **OPTICS)
    assert result.saturation_level is None                           # float frames: nothing marked
    assert (tmp_path / "out.dark.tif").is_file()
    side = json.loads((tmp_path / "out.json").read_text())
    assert side["dark_frame"] == "out.dark.tif" and "saturation_level" not in side
    raw = read_raw(tmp_path / "out.tif")
    assert raw.valid is None
    np.testing.assert_allclose(raw.intensities, np.clip(stack - dark, 0, None))
    assert raw.meta["dark_frame"] == "out.dark.tif"


def test_frames_are_streamed_one_page_at_a_time(tmp_path, monkeypatch):
    write_pngs(tmp_path / "f", acquisition(np.uint8))
    shapes = []
    original = tifffile.TiffWriter.write

    def record(self, data, *args, **kwargs):
        shapes.append(np.shape(data))
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(tifffile.TiffWriter, "write", record)
    import_frames(tmp_path / "f", tmp_path / "out.tif", BoardSpec(90.0, grid=(ROWS, COLS), pitch_mm=4.0), **OPTICS)
    assert shapes == [(H, W)] * 12


def test_grey_rgb_png_accepted_colour_png_refused(tmp_path):
    stack = acquisition(np.uint8, seed=4)
    folder = tmp_path / "rgb"
    folder.mkdir()
    for i, frame in enumerate(stack):
        Image.fromarray(np.repeat(frame[..., None], 3, axis=2)).save(folder / f"c{i}.png")
    board = BoardSpec(90.0, grid=(ROWS, COLS), pitch_mm=4.0)
    import_frames(folder, tmp_path / "out.tif", board, **OPTICS)
    np.testing.assert_array_equal(read_raw(tmp_path / "out.tif").intensities, stack)
    colour = np.repeat(stack[3][..., None], 3, axis=2)
    colour[0, 0, 1] += 1
    Image.fromarray(colour).save(folder / "c3.png")
    with pytest.raises(FPMInputError, match=r"c3\.png: colour frame"):
        import_frames(folder, tmp_path / "out2.tif", board, **OPTICS)
    assert not (tmp_path / "out2.tif").exists()


# ---- errors: one line naming the file, exit code 2, nothing left behind ----------------------
def _bad_shapes(folder: Path) -> str:
    Image.fromarray(np.zeros((H + 1, W), np.uint8)).save(folder / "image7.png")
    return "image7.png"


def _unreadable(folder: Path) -> str:
    (folder / "image5.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return "image5.png"


def _truncated(folder: Path) -> str:
    data = (folder / "image9.png").read_bytes()
    (folder / "image9.png").write_bytes(data[: len(data) // 2])
    return "image9.png"


def _stray_file(folder: Path) -> str:
    (folder / "settings.xml").write_text("<camera/>")
    return "settings.xml"


def _mixed_types(folder: Path) -> str:
    Image.fromarray(np.zeros((H, W), np.uint16)).save(folder / "image3.png")
    return "image3.png"


@pytest.mark.parametrize("damage", [_bad_shapes, _unreadable, _truncated, _stray_file, _mixed_types])
def test_bad_frames_exit_2_naming_the_file(tmp_path, capsys, damage):
    write_pngs(tmp_path / "frames", acquisition(np.uint8))
    name = damage(tmp_path / "frames")
    code = main(["import", str(tmp_path / "frames"), "-o", str(tmp_path / "out.tif"), "--led-grid", "3x4",
                 "--led-pitch-mm", "4", "--led-distance-mm", "90", *OPTICS_ARGS])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("fpminr: error: ") and name in err
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("case, expected", [
    ("csv_rows", "11 LED positions but 12 frames"),
    ("no_wavelength", "pass --wavelength-um"),
    ("csv_text", "row 3"),
    ("distance", "--led-distance-mm"),
    ("dark_and_saturation", "not below the saturation level"),
])
def test_bad_board_or_options_exit_2(tmp_path, capsys, case, expected):
    write_pngs(tmp_path / "frames", acquisition(np.uint8))
    positions = board_positions()
    csv = write_csv(tmp_path / "leds.csv", positions[:-1] if case == "csv_rows" else positions)
    if case == "csv_text":
        csv.write_text("x_mm,y_mm\n0,0\n1,one\n")
    args = ["import", str(tmp_path / "frames" / "image*.png"), "-o", str(tmp_path / "out.tif"),
            "--led-positions", str(csv), "--led-distance-mm", "-5" if case == "distance" else "180", *OPTICS_ARGS]
    if case == "no_wavelength":
        args.remove("--wavelength-um")
        args.remove("0.532")
    if case == "dark_and_saturation":
        args += ["--saturation", "100", "--dark-level", "120"]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and expected in err, err
    if case in ("csv_rows", "csv_text"):
        assert "leds.csv" in err
    assert leftovers(tmp_path) == []


def test_output_never_replaces_an_input(tmp_path, capsys):
    stack = acquisition(np.uint8)
    tifs = []
    for i, frame in enumerate(stack):
        tifs.append(tmp_path / f"t{i}.tif")
        tifffile.imwrite(tifs[-1], frame)
    tifffile.imwrite(tmp_path / "x.dark.tif", np.zeros((H, W), np.uint8))
    grid = ["--led-grid", "3x4", "--led-pitch-mm", "4", "--led-distance-mm", "90", *OPTICS_ARGS]
    frame_bytes = tifs[0].read_bytes()
    assert main(["import", *map(str, tifs), "-o", str(tifs[0]), *grid]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert tifs[0].read_bytes() == frame_bytes
    assert main(["import", *map(str, tifs), "-o", str(tmp_path / "x.tif"), *grid,
                 "--dark-frame", str(tmp_path / "x.dark.tif")]) == 2      # x.dark.tif would be rewritten
    err = capsys.readouterr().err
    assert "x.dark.tif" in err and "would overwrite the input" in err
    assert not (tmp_path / "x.tif").exists()


# ---- sidecar validation (io/native.py) -------------------------------------------------------
@pytest.fixture
def imported(tmp_path):
    write_pngs(tmp_path / "f", acquisition(np.uint8))
    import_frames(tmp_path / "f", tmp_path / "out.tif", BoardSpec(90.0, grid=(ROWS, COLS), pitch_mm=4.0), **OPTICS)
    return tmp_path / "out.tif"


@pytest.mark.parametrize("change, expected", [
    ({"saturation_level": "255"}, "'saturation_level' must be a finite number"),
    ({"saturation_level": -1}, "'saturation_level' must be positive"),
    ({"dark_level": 300}, "'dark_level' must be >= 0 and below the saturation level"),
    ({"dark_level": float("nan")}, "'dark_level' must be a finite number"),
    ({"dark_frame": "missing.tif"}, "dark frame missing.tif not found"),
    ({"dark_frame": "../out.tif"}, "must be a file name beside the sidecar"),
    ({"dark_frame": "out.tif"}, "the dark frame holds 12 images"),
    ({"dark_frame": "wrong.tif"}, "dark frame is (3, 3) uint8"),
    ({"dark_level": 1, "dark_frame": "x.tif"}, "not both"),
    ({"acquisition": "real"}, "'acquisition' must be"),
])
def test_sidecar_keys_are_validated(imported, change, expected):
    tifffile.imwrite(imported.with_name("wrong.tif"), np.zeros((3, 3), np.uint8))
    side = imported.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta.update(change)
    side.write_text(json.dumps(meta))
    with pytest.raises(FPMInputError) as err:
        read_raw(imported)
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert ".json" in str(err.value) or ".tif:" in str(err.value)


# ---- measured or simulated -------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".tif", ".mat", ".hdf5"])
def test_simulated_files_are_marked_measurements_are_not(tmp_path, small_raw, suffix):
    from napari_fpminr.simulate import simulate

    sim = simulate(preset="single", size=16, seed=0).raw
    assert read_raw(write_raw(sim, tmp_path / f"sim{suffix}")).is_simulated
    measured = read_raw(write_raw(small_raw(), tmp_path / f"meas{suffix}"))
    assert not measured.is_simulated


@pytest.mark.skipif(not (SHARED_DATA / "bloodsmear_blue.mat").exists(), reason="shared data absent")
def test_uconn_files_are_measurements():
    assert not read_raw(SHARED_DATA / "bloodsmear_blue.mat").is_simulated


def test_which_folders_hold_frames(tmp_path):
    frames = tmp_path / "frames"
    write_pngs(frames, acquisition(np.uint8)[:2])
    assert looks_like_frames_folder(frames)
    assert not looks_like_frames_folder(frames / "image1.png")          # a file
    (tmp_path / "one").mkdir()
    write_pngs(tmp_path / "one", acquisition(np.uint8)[:1])
    assert not looks_like_frames_folder(tmp_path / "one")
    tifffile.imwrite(frames / "set.tif", np.zeros((2, 4, 4), np.float32), photometric="minisblack")
    (frames / "set.json").write_text("{}")                            # a native data set inside
    assert not looks_like_frames_folder(frames)
    assert frames_mod.frame_files(str(frames / "image*.png"))[0].name == "image1.png"


def test_tiles_read_an_imported_set_as_read_raw_does(tmp_path):
    """The tiles' lazy TIFF source applies the same saturation mask and dark frame, window by window."""
    from napari_fpminr.tiles.source import MemorySource, open_source

    stack = acquisition(np.uint8, seed=6)
    write_pngs(tmp_path / "f", stack)
    dark = np.random.default_rng(1).integers(0, 9, (H, W)).astype(np.uint8)
    Image.fromarray(dark).save(tmp_path / "dark.png")
    board = BoardSpec(90.0, grid=(ROWS, COLS), pitch_mm=4.0)
    import_frames(tmp_path / "f", tmp_path / "out.tif", board, dark_frame=tmp_path / "dark.png", **OPTICS)
    whole = read_raw(tmp_path / "out.tif")
    for source in (open_source(tmp_path / "out.tif"), MemorySource.from_raw(whole)):
        tile = source.tile_raw(1, 2, 6, 7)
        expected = whole.crop(1, 2, 6, 7)
        np.testing.assert_array_equal(tile.intensities, expected.intensities)
        np.testing.assert_array_equal(tile.valid, expected.valid)
    assert open_source(tmp_path / "out.tif").kind == "tiff"
