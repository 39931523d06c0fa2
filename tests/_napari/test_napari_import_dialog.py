"""A dropped folder of frames opens the import dialog; filled in, it writes the native set and opens
it as the raw layer (real viewer, run under xvfb-run). Other folders are left to other readers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_fpminr._napari import _import_dialog, _reader
from napari_fpminr._napari._import_dialog import BOARD_GRID, default_output
from napari_fpminr._napari._layers import RAW_KEY

pytestmark = pytest.mark.gui
PLUGIN = "napari-fpminr"


@pytest.fixture
def frames_folder(tmp_path):
    rng = np.random.default_rng(0)
    stack = rng.integers(10, 200, (9, 12, 16)).astype(np.uint8)
    stack[4, 0, :5] = 255                                          # saturated pixels in one frame
    folder = tmp_path / "usaf"
    folder.mkdir()
    for i, frame in enumerate(stack):
        Image.fromarray(frame).save(folder / f"image{i + 1}.png")
    (folder / "leds.csv").write_text("x_mm,y_mm\n" + "".join(f"{x},{y}\n" for y in (-8, 0, 8) for x in (-8, 0, 8)))
    return folder, stack


def _fill_optics(dialog):
    dialog.distance_mm.value = 90.0
    dialog.wavelength_um.value = 0.532
    dialog.na_obj.value = 0.1
    dialog.mag.value = 3.0
    dialog.pixel_um.value = 3.45


def test_dropped_folder_opens_the_dialog_which_writes_and_opens_raw_data(make_napari_viewer, frames_folder):
    folder, stack = frames_folder
    viewer = make_napari_viewer()
    viewer.open(str(folder), plugin=PLUGIN)                      # a drop of the folder on the canvas
    assert len(viewer.layers) == 0
    dialog = _import_dialog.last_dialog()
    assert dialog is not None and dialog.viewer is viewer
    assert dialog.board.value != BOARD_GRID and dialog.led_positions.value.name == "leds.csv"   # found beside
    dialog.button.clicked.emit()                                 # optics missing: one line, nothing written
    assert "wavelength" in dialog.status.value and len(viewer.layers) == 0
    assert not default_output(folder).exists()
    _fill_optics(dialog)
    dialog.button.clicked.emit()
    out = default_output(folder)
    assert out == folder.with_name("usaf.tif") and out.is_file(), dialog.status.value
    (layer,) = viewer.layers
    raw = layer.metadata[RAW_KEY]
    np.testing.assert_array_equal(raw.intensities, stack)
    assert raw.valid is not None and not raw.valid[4, 0, :5].any() and raw.valid.sum() == stack.size - 5
    assert raw.leds.n_leds == 9 and not raw.is_simulated
    assert json.loads(out.with_suffix(".json").read_text())["acquisition"] == "measured"


def test_grid_board_in_the_dialog(make_napari_viewer, frames_folder, tmp_path):
    folder, stack = frames_folder
    (folder / "leds.csv").unlink()
    viewer = make_napari_viewer()
    dialog = _import_dialog.open_import_dialog(folder, viewer)
    assert dialog.board.value == BOARD_GRID
    assert not dialog.grid.native.isHidden() and dialog.led_positions.native.isHidden()
    dialog.grid.value = "3x3"
    dialog.order.value = "spiral"
    dialog.pitch_mm.value = 5.0
    dialog.out.value = str(tmp_path / "grid.tif")
    _fill_optics(dialog)
    layer = dialog.run()
    assert layer is not None and layer in viewer.layers
    assert layer.metadata[RAW_KEY].leds.positions_mm()[0].tolist() == [0.0, 0.0]   # spiral from the centre


def test_other_folders_are_left_to_other_readers(tmp_path):
    assert _reader.get_reader(str(tmp_path)) is None                      # empty
    stack = np.zeros((3, 4, 4), np.float32)
    tifffile.imwrite(tmp_path / "set.tif", stack, photometric="minisblack")
    tifffile.imwrite(tmp_path / "other.tif", stack, photometric="minisblack")
    (tmp_path / "set.json").write_text("{}")                              # holds a native data set
    assert _reader.get_reader(str(tmp_path)) is None
    (tmp_path / "set.json").unlink()
    assert _reader.get_reader(str(tmp_path)) is _reader.read_frames_folder
