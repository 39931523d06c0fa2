"""Issue 9: what a new user met in the first hour in a real viewer (run under xvfb-run).

Raw data open visible, the amplitude is on top, z is shown in µm, a model opened before the
widget fills the z-stack box, switching data resets the widget, TIFFs are left to napari,
foreign .mat files get a clear message.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import tifffile

from napari_fpminr._napari._layers import KIND_KEY, LED_KEY, MODEL_KEY, RAW_KEY, Z_LABEL, raw_layer_data
from napari_fpminr._napari._sample_data import sample_model_path
from napari_fpminr._napari._state import TrainState

pytestmark = pytest.mark.gui
PLUGIN, WIDGET = "napari-fpminr", "FPM-INR reconstruction"
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
GREEN = DATA / "bloodsmear_green.mat"


@pytest.fixture(scope="module")
def small_raw():
    from napari_fpminr.simulate import simulate

    return simulate(preset="tilted", size=24, seed=1).raw


@pytest.fixture(scope="module")
def other_raw():
    from napari_fpminr.simulate import simulate

    return simulate(preset="tilted", size=24, seed=5).raw


def _canvas(viewer) -> np.ndarray:
    return np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3].astype(float)


def _model_layers(viewer):
    return [ly for ly in viewer.layers if MODEL_KEY in ly.metadata and ly.metadata[KIND_KEY] in ("amplitude", "phase")]


def _assert_amplitude_on_top(viewer):
    """Amplitude visible and above the phase; phase hidden until asked."""
    layers = _model_layers(viewer)
    kinds = [ly.metadata[KIND_KEY] for ly in layers]
    assert kinds == ["phase", "amplitude"], kinds          # napari draws the last layer on top
    phase, amp = layers
    assert amp.visible and not phase.visible
    assert list(viewer.layers).index(amp) > list(viewer.layers).index(phase)


# ---- 2. raw data visible on open --------------------------------------------------------
@pytest.mark.skipif(not GREEN.is_file(), reason="shared/data not present")
def test_real_raw_data_opens_on_the_brightest_bright_field_led(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    (layer,) = viewer.open(str(GREEN), plugin=None)           # as a drop: no plugin named
    raw = layer.metadata[RAW_KEY]
    led = int(viewer.dims.current_step[0])
    assert raw.optics.bright_field[led]                       # a bright-field image ...
    means = raw.intensities.reshape(raw.n_leds, -1).mean(axis=1)
    assert means[led] == means[raw.optics.bright_field].max()  # ... the brightest one
    assert layer.metadata[LED_KEY] == led
    lo, hi = layer.contrast_limits
    shown = raw.intensities[led]
    assert lo <= np.median(shown) <= hi and hi <= shown.max() * 1.01   # limits from that image
    shot = _canvas(viewer)
    assert shot.mean() > 40 and shot.std() > 5                 # not the black canvas of issue 9
    assert np.asarray(layer.thumbnail)[..., :3].mean() > 40     # nor a black thumbnail


def test_sample_raw_opens_visible(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    (layer,) = viewer.open_sample(PLUGIN, "tilted_raw")
    raw = layer.metadata[RAW_KEY]
    assert raw.optics.bright_field[int(viewer.dims.current_step[0])]
    assert _canvas(viewer).mean() > 40


# ---- 3. amplitude on top, phase hidden, everywhere model layers appear --------------------
def test_dropped_model_and_sample_model_show_amplitude_on_top(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.open(str(sample_model_path()), plugin=None)        # a drop of a .fpminr file
    _assert_amplitude_on_top(viewer)
    viewer.layers.clear()
    viewer.open_sample(PLUGIN, "tilted_model")
    _assert_amplitude_on_top(viewer)
    amp = _model_layers(viewer)[1]
    assert _canvas(viewer).std() > 5 and amp.name == "pretrained amplitude"


def test_gui_launcher_with_a_model_fills_the_zstack_box(make_napari_viewer, qtbot):
    """``fpminr gui model.fpminr``: amplitude on top (3) and the z-stack box holds the model's
    planes (5), so Show z-stack keeps the stack instead of collapsing it to z = 0."""
    from napari_fpminr._napari.launch import open_viewer

    viewer, widget = open_viewer(str(sample_model_path()), viewer=make_napari_viewer(show=True))
    amp = next(ly for ly in _model_layers(viewer) if ly.metadata[KIND_KEY] == "amplitude")
    z = amp.metadata["fpminr_z_um"]
    assert len(z) > 10
    assert widget.view_z_min.value() == pytest.approx(z[0], abs=1e-3)
    assert widget.view_z_max.value() == pytest.approx(z[-1], abs=1e-3)
    assert widget.view_z_step.value() == pytest.approx(z[1] - z[0], abs=1e-3)
    widget.apply_z_btn.click()
    amp = next(ly for ly in _model_layers(viewer) if ly.metadata[KIND_KEY] == "amplitude")
    assert amp.data.shape[0] == len(z)
    _assert_amplitude_on_top(viewer)


def test_selecting_a_model_layer_later_fills_the_zstack_box(make_napari_viewer, qtbot, small_raw):
    viewer = make_napari_viewer()
    data, meta, _ = raw_layer_data(small_raw)
    viewer.add_image(data, **meta)
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert widget.view_z_min.value() == widget.view_z_max.value() == 0.0
    added = viewer.open(str(sample_model_path()), plugin=None)
    z = added[-1].metadata["fpminr_z_um"]
    assert widget.view_z_min.value() == pytest.approx(z[0], abs=1e-3)
    assert widget.view_z_max.value() == pytest.approx(z[-1], abs=1e-3)


# ---- 4. z in µm, depth colour bar, nothing clipped --------------------------------------
def test_depth_shown_in_micrometres(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "tilted_raw")
    viewer.open_sample(PLUGIN, "tilted_model")
    amp = _model_layers(viewer)[1]
    z_axis = viewer.dims.ndim - 3
    assert viewer.dims.axis_labels[z_axis] == Z_LABEL == "z (µm)"
    target = float(amp.translate[0] + 3 * amp.scale[0])
    viewer.dims.set_point(z_axis, target)
    assert viewer.text_overlay.visible
    assert viewer.text_overlay.text == f"z = {target:+.2f} µm"
    viewer.dims.set_point(z_axis, float(amp.translate[0]))
    assert viewer.text_overlay.text == f"z = {float(amp.translate[0]):+.2f} µm"
    amp.visible = False
    assert not viewer.text_overlay.visible                     # no z-stack shown, no depth to show
    amp.visible = True
    assert viewer.text_overlay.visible
    for layer in _model_layers(viewer):
        viewer.layers.remove(layer)
    assert not viewer.text_overlay.visible


def test_depth_map_has_a_colour_bar_and_names_fit(make_napari_viewer, qtbot):
    from qtpy.QtCore import QPoint
    from qtpy.QtGui import QColor
    from qtpy.QtWidgets import QLabel

    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "tilted_model")
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    qtbot.waitUntil(lambda: widget.backend_ready, timeout=60_000)
    worker = widget.show_all_in_focus()
    assert worker is not None
    qtbot.waitUntil(lambda: widget._aif_worker is None, timeout=120_000)
    depth = next(ly for ly in viewer.layers if ly.metadata.get(KIND_KEY) == "depth")
    assert depth.colorbar.visible
    assert "µm" in depth.name
    for layer in _model_layers(viewer):
        layer.visible = False
    assert viewer.text_overlay.visible and "µm" in viewer.text_overlay.text   # the colour bar's unit
    qtbot.wait(50)
    # the dock title is not clipped: in the rendered title bar, the text ends well before the
    # dock's right edge (it used to run into it: "(napari-fpminr" without its ")")
    (label,) = [w for w in dock.findChildren(QLabel) if w.text().startswith(WIDGET)]
    bar = label.parentWidget()
    img = bar.grab().toImage()
    lum = np.array([[QColor(img.pixel(x, y)).lightness() for x in range(img.width())]
                    for y in range(img.height())], dtype=float)
    background = np.median(lum)
    text_cols = np.nonzero((np.abs(lum - background) > 60).any(axis=0))[0]
    label_left = label.mapTo(bar, QPoint(0, 0)).x()
    text_cols = text_cols[text_cols >= label_left]
    assert text_cols.size > 0
    assert text_cols.max() <= bar.width() - 12, (text_cols.max(), bar.width())
    # every layer name fits in the layer list (napari elides the text in the row)
    qt_list = viewer.window._qt_viewer.layers
    for row in range(qt_list.model().rowCount()):
        index = qt_list.model().index(row, 0)
        rect = qt_list.visualRect(index)
        name = index.data()
        fm = qt_list.fontMetrics()
        text_width = fm.horizontalAdvance(name)
        # room for the name: the row minus the thumbnail, eye and type icons napari draws
        assert text_width <= rect.width() - 110, (name, text_width, rect.width())


# ---- 6. switching raw data resets the widget -------------------------------------------
def test_switching_raw_data_resets_status_plot_and_save(make_napari_viewer, qtbot, small_raw, other_raw):
    viewer = make_napari_viewer()
    data, meta, _ = raw_layer_data(small_raw)
    meta["name"] = "first (raw)"
    viewer.add_image(data, **meta)
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    qtbot.waitUntil(lambda: widget.backend_ready, timeout=60_000)
    widget.form.epochs.setValue(1)
    widget.form.n_z.setValue(3)
    widget.form.q.setValue(4)
    widget.start_btn.click()
    qtbot.waitUntil(lambda: widget.machine.state is TrainState.DONE, timeout=120_000)
    assert len(widget.loss_plot.data()[0]) > 0 and widget.status.text().startswith("done")
    assert widget.save_btn.text() == "Save model…"
    data, meta, _ = raw_layer_data(other_raw)
    meta["name"] = "second (raw)"
    viewer.add_image(data, **meta)
    widget.raw_combo.setCurrentText("second (raw)")
    assert widget.selected_raw() is other_raw
    assert widget.machine.state is TrainState.IDLE
    assert len(widget.loss_plot.data()[0]) == 0 and widget.progress.value() == 0
    assert widget.last_event is None
    assert widget.preview.pixmap() is None or widget.preview.pixmap().isNull()
    assert "second (raw)" in widget.status.text() and not widget.status.text().startswith("done")
    assert widget.save_btn.text() == "Save previous model…" and widget.save_btn.isEnabled()  # relabelled
    assert "first (raw)" in widget.save_btn.toolTip() and "first (raw)" in widget.status.text()
    assert widget.start_btn.isEnabled()
    widget.raw_combo.setCurrentText("first (raw)")
    assert widget.save_btn.text() == "Save model…"
    # closing every raw layer also clears the display of the run on them
    widget.start_btn.click()
    qtbot.waitUntil(lambda: widget.machine.state is TrainState.DONE, timeout=120_000)
    viewer.layers.clear()
    assert len(widget.loss_plot.data()[0]) == 0 and widget.progress.value() == 0
    assert widget.status.text().startswith("idle") and widget.save_btn.isEnabled()


# ---- 7. TIFFs go to napari, foreign .mat gets a clear message ----------------------------
def test_plain_tiff_opens_with_napari_without_a_reader_choice(make_napari_viewer, tmp_path):
    from napari.plugins import _npe2

    tif = tmp_path / "plain.tif"
    tifffile.imwrite(tif, (np.arange(3 * 16 * 16) % 251).reshape(3, 16, 16).astype(np.uint16))
    assert PLUGIN not in _npe2.get_readers(str(tif))          # no second claim: no dialog
    viewer = make_napari_viewer()
    layers = viewer.open(str(tif), plugin=None)   # as a drop; two claims raise MultipleReaderError
    assert len(layers) == 1 and RAW_KEY not in layers[0].metadata
    assert layers[0].data.shape == (3, 16, 16)


def test_native_stack_opens_through_its_sidecar(make_napari_viewer, tmp_path, tiny_raw):
    from napari.plugins import _npe2

    from napari_fpminr._napari._reader import get_reader
    from napari_fpminr.io import write_raw

    tif = write_raw(tiny_raw, tmp_path / "native.tif")
    side = tif.with_suffix(".json")
    assert list(_npe2.get_readers(str(side))) == [PLUGIN]
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(side), plugin=None)
    assert layer.metadata[RAW_KEY].n_leds == tiny_raw.n_leds
    assert get_reader(str(tif)) is not None                    # a TIFF with our sidecar is ours
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((2, 8, 8), np.uint16))
    assert get_reader(str(plain)) is None                      # any other TIFF is not


def test_foreign_mat_and_json_give_one_clear_message(make_napari_viewer, tmp_path, monkeypatch):
    from napari_fpminr._napari import _reader

    shown: list[str] = []
    monkeypatch.setattr(_reader, "show_error", shown.append)
    mat = tmp_path / "other.mat"
    scipy.io.savemat(mat, {"something": np.ones(3)})
    other_json = tmp_path / "settings.json"
    other_json.write_text(json.dumps({"a": 1}))
    viewer = make_napari_viewer()
    for path, words in ((mat, "not a recognised FPM raw-data file"), (other_json, "sidecar")):
        shown.clear()
        assert viewer.open(str(path), plugin=None) == []      # no ReaderPluginError
        assert len(shown) == 1 and str(path) in shown[0] and words in shown[0], shown
        assert "Traceback" not in shown[0]
    assert len(viewer.layers) == 0
