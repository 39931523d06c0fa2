"""The FPM-INR dock widget: pick a raw layer, set parameters, train, watch, save, browse.

Training runs ``recon.train.iter_train`` on a napari worker thread (``create_worker`` over a
generator); the GUI thread only receives progress batches (at most 20 per second) and updates
the progress bar, ETA, loss plot and (at most twice a second) a preview image, so the viewer
stays responsive. Stop sets a flag that the trainer checks between steps; the trainer then returns
the model trained so far as its last event. A :class:`~._state.StateMachine`
(idle / training / stopping / done / stopped / failed) drives the buttons.

After training (or for any model layer that is selected) the "z-stack view" controls resample
the lazy layers at any z range and step without retraining.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import FPMInputError
from ..progress import format_seconds
from ._layers import KIND_KEY, MODEL_KEY, RAW_KEY, Z_KEY
from ._loss_plot import LossPlot
from ._model_views import ModelViews, matching_raw
from ._mosaic import MOSAIC_KEY
from ._params import ParameterForm, TrainingParameters
from ._state import StateMachine, TrainState, buttons_for
from ._params import PRESETS
from ._training import (
    calibrate,
    crop_origin_um,
    default_parameters,
    estimate_seconds,
    prepare_raw,
    status_text,
    train_events,
    warm_up,
)
from ._viewer import watch

if TYPE_CHECKING:
    import napari

PREVIEW_INTERVAL_S = 0.5
#: the dock title's buttons, margins and a safety margin beyond the title text (px)
DOCK_TITLE_EXTRA_PX = 120
PREVIEW_PX = 192


class StopFlag(threading.Event):
    """A ``threading.Event`` that can also be called (``stop()`` -> is it set?)."""

    def __call__(self) -> bool:
        return self.is_set()


class ReconstructionWidget(ModelViews, QWidget):
    """Dock widget: raw layer -> FPM-INR training -> lazy z-stack layers and ``.fpminr``."""

    def __init__(self, napari_viewer: "napari.Viewer", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.machine = StateMachine()
        self.model = None                  # last trained model (kept after Stop)
        self.last_event = None
        self.worker = None
        self._aif_worker = None            # all-in-focus computation in progress
        self._stop = StopFlag()
        self._stop_requested_at: float | None = None
        self._last_preview = 0.0
        self._layer_prefix = "FPM-INR"
        self.backend_ready = False
        self._run_raw = None               # the raw data the status, loss plot and preview refer to
        self._model_raw_name = ""          # raw layer the current model was trained on
        self._run_raw_name = ""
        self._run_origin_um = (0.0, 0.0)    # where the trained (cropped) field sits on the raw image
        self._run_params = None
        self._run_model = None              # the model the current/last run produced
        self._cuda_available = False

        self.raw_combo = QComboBox()
        self.raw_combo.setToolTip("image layer opened from FPM raw data (File > Open or drag-and-drop)")
        self.form = ParameterForm(default_parameters())
        self.estimate = QLabel("")
        self.estimate.setWordWrap(True)
        self.estimate.setToolTip("expected wall time of these settings (a cost model; after a run on this "
                                 "machine it uses the speed measured there)")
        self.start_btn = QPushButton("Start")
        self.stop_btn = QPushButton("Stop")
        self.save_btn = QPushButton("Save model…")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.status = QLabel("idle")
        self.status.setWordWrap(True)
        self.loss_plot = LossPlot()
        self.preview = QLabel()
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumHeight(PREVIEW_PX)
        self.preview.setToolTip("amplitude at the middle of the z range, as training goes")
        self._preview_buffer = None

        self.view_z_min = QDoubleSpinBox()
        self.view_z_max = QDoubleSpinBox()
        self.view_z_step = QDoubleSpinBox()
        for box, suffix in ((self.view_z_min, " µm"), (self.view_z_max, " µm"), (self.view_z_step, " µm")):
            box.setRange(-5000, 5000)
            box.setDecimals(3)
            box.setSuffix(suffix)
        self.view_z_step.setRange(0.001, 1000)
        self.view_z_step.setValue(1.0)
        self.apply_z_btn = QPushButton("Show z-stack")
        self.aif_btn = QPushButton("All-in-focus + depth")

        self._build_layout()
        # wide enough for napari's dock title "FPM-INR reconstruction (napari-fpminr)" next to
        # its three buttons, with room to spare (it was clipped at the default width)
        title = "FPM-INR reconstruction (napari-fpminr)"
        self.setMinimumWidth(self.fontMetrics().horizontalAdvance(title) + DOCK_TITLE_EXTRA_PX)
        self.start_btn.clicked.connect(self.start)
        self.stop_btn.clicked.connect(self.stop)
        self.save_btn.clicked.connect(self._save_dialog)
        self.apply_z_btn.clicked.connect(self.show_model_layers)
        self.aif_btn.clicked.connect(self.show_all_in_focus)
        self.raw_combo.currentIndexChanged.connect(self._raw_changed)
        self.form.changed.connect(self._update_estimate)
        self.machine.connect(self._on_state)
        for ev in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            ev.connect(self._refresh_layers)
        self.viewer.layers.selection.events.active.connect(self._active_changed)
        watch(self.viewer)
        self._refresh_layers()
        self._active_changed()   # a model opened before the widget (fpminr gui model.fpminr)
        self._on_state(self.machine.state)
        self.status.setText("loading the compute backend…")
        self._warm_worker = create_worker(warm_up, _start_thread=False)
        self._warm_worker.finished.connect(self._backend_loaded)
        self._warm_worker.start()

    # ---- layout --------------------------------------------------------------------------
    def _build_layout(self) -> None:
        top = QFormLayout()
        top.addRow("raw data", self.raw_combo)
        train_box = QGroupBox("Training")
        tl = QVBoxLayout(train_box)
        tl.addWidget(self.form)
        tl.addWidget(self.estimate)
        buttons = QHBoxLayout()
        for b in (self.start_btn, self.stop_btn, self.save_btn):
            buttons.addWidget(b)
        tl.addLayout(buttons)
        tl.addWidget(self.progress)
        tl.addWidget(self.status)
        tl.addWidget(self.loss_plot)
        tl.addWidget(self.preview)
        view_box = QGroupBox("z-stack view (no retraining)")
        vl = QFormLayout(view_box)
        vl.addRow("z min", self.view_z_min)
        vl.addRow("z max", self.view_z_max)
        vl.addRow("z step", self.view_z_step)
        row = QHBoxLayout()
        row.addWidget(self.apply_z_btn)
        row.addWidget(self.aif_btn)
        vl.addRow(row)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        from ._check_panel import CheckPanel  # "fpminr info --check" of the selected measurement

        self.check_panel = CheckPanel(self.selected_raw)
        layout.addWidget(self.check_panel)
        from ._calibration import CalibrationPanel  # "Calibrate illumination" step with a before/after view

        self.calibration_panel = CalibrationPanel(self.viewer, self.selected_raw_layer)
        layout.addWidget(self.calibration_panel)
        layout.addWidget(train_box)
        layout.addWidget(view_box)
        from ._tiles_panel import TilesPanel  # whole slides: tiled run with a progress bar over tiles

        self.tiles_panel = TilesPanel(self.viewer, self.selected_raw)
        layout.addWidget(self.tiles_panel)
        from ._colour_panel import ColourPanel  # red, green, blue raw layers -> one colour model

        self.colour_panel = ColourPanel(self.viewer)
        layout.addWidget(self.colour_panel)
        layout.addStretch(1)

    # ---- layers and selection ------------------------------------------------------------
    def raw_layers(self) -> list[Any]:
        return [ly for ly in self.viewer.layers if RAW_KEY in getattr(ly, "metadata", {})]

    def training_raw_of(self, model):
        """The raw-data layer's data a model was trained on (same content hash), or None."""
        return matching_raw(model, [layer.metadata[RAW_KEY] for layer in self.raw_layers()])

    def selected_raw_layer(self):
        return next((ly for ly in self.raw_layers() if ly.name == self.raw_combo.currentText()), None)

    def selected_raw(self):
        name = self.raw_combo.currentText()
        for layer in self.raw_layers():
            if layer.name == name:
                return layer.metadata[RAW_KEY]
        return None

    def _refresh_layers(self, event=None) -> None:
        current = self.raw_combo.currentText()
        names = [ly.name for ly in self.raw_layers()]
        self.raw_combo.blockSignals(True)
        self.raw_combo.clear()
        self.raw_combo.addItems(names)
        if current in names:
            self.raw_combo.setCurrentText(current)
        self.raw_combo.blockSignals(False)
        if not names and hasattr(self, "check_panel"):
            self.check_panel.refresh()  # the checked data were closed: no stale report
        if names and current not in names:
            self._raw_changed()
        elif self._run_raw is not None and self.form.isEnabled() and \
                all(ly.metadata[RAW_KEY] is not self._run_raw for ly in self.raw_layers()):
            self._reset_run_display()      # the data the display refers to were closed
            self._relabel_save()
        self._refresh_buttons()

    def _raw_changed(self, *_: Any) -> None:
        raw = self.selected_raw()
        if hasattr(self, "check_panel"):
            self.check_panel.refresh()
        if raw is not None and self.form.isEnabled():
            self.form.fill_from_raw(raw)
        if raw is not self._run_raw and self._run_raw is not None and self.form.isEnabled():
            self._reset_run_display()
        self._relabel_save()
        self._update_estimate()
        self._refresh_buttons()

    def _update_estimate(self, *_: Any) -> None:
        """Show the expected time of the current settings before Start."""
        raw = self.selected_raw()
        if raw is None:
            self.estimate.setText("")
            return
        params = self.parameters()
        try:
            seconds, measured = estimate_seconds(raw, params)
            shape = prepare_raw(raw, params).lr_shape
        except Exception as exc:  # noqa: BLE001 - e.g. a crop the data refuse: say so, do not break
            self.estimate.setText(f"expected time: unknown ({exc})")
            return
        where = "measured speed of this machine" if measured else "estimate for a 2-core CPU"
        field = f"{shape[1]}×{shape[0]} px" + (" (centred crop)" if tuple(shape) != tuple(raw.lr_shape) else "")
        gpu = " — much faster on a GPU" if self._cuda_available else ""
        self.estimate.setText(f"expected on CPU: ≈ {format_seconds(seconds)} ({where}); field {field}{gpu}")

    def _reset_run_display(self) -> None:
        """Other raw data selected: the status, loss plot, progress and preview of the previous
        run are cleared; the last model stays available to Save (its button names its data)."""
        self._run_raw = None
        self.last_event = None
        self.loss_plot.clear()
        self.progress.setValue(0)
        self.preview.clear()
        if self.machine.can(TrainState.IDLE):
            self.machine.to(TrainState.IDLE)
        name = self.raw_combo.currentText()
        text = f"idle: {name} selected, press Start" if name else "idle: choose raw data and press Start"
        if self.model is not None:
            text += f" (the last model, trained on {self._model_raw_name}, can still be saved)"
        self.status.setText(text)

    def _relabel_save(self) -> None:
        """"Save model…" when the model belongs to the selected data, else "Save previous
        model…" (the tooltip and the status line name the data it was trained on)."""
        other = self.model is not None and self._model_raw_name and \
            self._model_raw_name != self.raw_combo.currentText()
        self.save_btn.setText("Save previous model…" if other else "Save model…")
        self.save_btn.setToolTip(f"save the model trained on {self._model_raw_name} as .fpminr"
                                 if self.model is not None else "no model trained yet")

    def _active_changed(self, *_: Any) -> None:
        """Selecting a model layer shows its z sampling in the z-stack view controls."""
        active = self.viewer.layers.selection.active
        meta = getattr(active, "metadata", {}) if active is not None else {}
        z = meta.get(Z_KEY)
        if (MODEL_KEY in meta or MOSAIC_KEY in meta) and z is not None and len(z) > 0 \
                and meta.get(KIND_KEY) in ("amplitude", "phase"):
            self.view_z_min.setValue(float(z[0]))
            self.view_z_max.setValue(float(z[-1]))
            if len(z) > 1:
                self.view_z_step.setValue(float(z[1] - z[0]))
        self._refresh_buttons()

    def current_model(self):
        """The model of the active layer if it has one, else the last trained model."""
        active = self.viewer.layers.selection.active
        for key in (MODEL_KEY, MOSAIC_KEY):  # a mosaic layer's MosaicModel acts as a model here
            if active is not None and key in getattr(active, "metadata", {}):
                return active.metadata[key]
        return self.model

    # ---- state ---------------------------------------------------------------------------
    def _backend_loaded(self) -> None:
        self.backend_ready = True
        self._warm_worker = None
        import torch  # loaded by the warm-up

        self._cuda_available = bool(torch.cuda.is_available())
        if self._cuda_available and self.form.device.currentText() in ("auto", "cuda") and self.form.quick() \
                and self.form.isEnabled():
            self.form.preset.setCurrentText(PRESETS[1])   # a GPU runs the full field in seconds
        self._update_estimate()
        if self.machine.state is TrainState.IDLE:
            self.status.setText("idle: choose raw data and press Start")
        self._refresh_buttons()

    def _on_state(self, state: TrainState) -> None:
        self._refresh_buttons()

    def _refresh_buttons(self, *_: Any) -> None:
        b = buttons_for(self.machine.state, has_raw=self.selected_raw() is not None,
                        has_model=self.model is not None, backend_ready=self.backend_ready)
        self.start_btn.setEnabled(b.start)
        self.stop_btn.setEnabled(b.stop)
        self.save_btn.setEnabled(b.save)
        self.form.setEnabled(b.edit_parameters)
        self.raw_combo.setEnabled(b.edit_parameters)
        has_view = self.current_model() is not None and b.edit_parameters
        self.apply_z_btn.setEnabled(has_view)
        self.aif_btn.setEnabled(has_view and self._aif_worker is None)

    # ---- training ------------------------------------------------------------------------
    def parameters(self) -> TrainingParameters:
        return self.form.values()

    def start(self) -> None:
        raw = self.selected_raw()
        if raw is None or not self.backend_ready or not self.machine.can(TrainState.TRAINING):
            return
        params = self.parameters()
        self._run_params = params
        self._run_model = None
        self._run_origin_um = crop_origin_um(raw, params)
        self._run_raw = raw
        self._run_raw_name = self.raw_combo.currentText()
        self._stop = StopFlag()
        self._stop_requested_at = None
        self.last_event = None
        self.loss_plot.clear()
        self.progress.setValue(0)
        self.status.setText("starting…")
        self.machine.to(TrainState.TRAINING)
        self.worker = create_worker(train_events, raw, params, self._stop, _start_thread=False)
        self.worker.yielded.connect(self._on_event)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.worker.start()

    def stop(self) -> None:
        """Ask the trainer to stop after the current step; it returns the model so far."""
        if self.machine.state is not TrainState.TRAINING:
            return
        self._stop.set()
        self._stop_requested_at = time.monotonic()
        self.status.setText("stopping…")
        self.machine.to(TrainState.STOPPING)

    def _on_event(self, batch) -> None:
        """GUI-thread handler of a :class:`~._training.ProgressBatch`."""
        event = batch.event
        self.last_event = event
        for step, loss, phase in batch.points:
            self.loss_plot.append(step, loss, phase)
        self.progress.setValue(int(round(1000 * min(1.0, max(0.0, event.fraction)))))
        self.status.setText(status_text(event))
        now = time.monotonic()
        if batch.preview is not None and now - self._last_preview >= PREVIEW_INTERVAL_S:
            self._last_preview = now
            self._show_preview(np.asarray(batch.preview))
        if event.model is not None:
            self.model = self._run_model = event.model
            self._model_raw_name = self._run_raw_name
            self._relabel_save()

    def _show_preview(self, image: np.ndarray) -> None:
        """Show a training preview in the widget (a QLabel: far cheaper than a new layer)."""
        img = np.asarray(image, dtype=np.float32)
        lo, hi = np.percentile(img, (0.5, 99.5)) if img.size else (0.0, 1.0)
        scaled = np.clip((img - lo) / max(float(hi - lo), 1e-12), 0, 1)
        self._preview_buffer = np.ascontiguousarray((255 * scaled).astype(np.uint8))
        h, w = self._preview_buffer.shape
        qimg = QImage(self._preview_buffer.data, w, h, w, QImage.Format.Format_Grayscale8)
        self.preview.setPixmap(QPixmap.fromImage(qimg).scaled(
            PREVIEW_PX, PREVIEW_PX, Qt.AspectRatioMode.KeepAspectRatio))

    def _on_error(self, exc: BaseException) -> None:
        if type(exc).__name__ == "TrainingStopped" and self._stop.is_set():
            return  # Stop during the seed, before any representation existed: _on_finished says so
        self.status.setText(f"failed: {exc}")
        show_error(str(exc) if isinstance(exc, FPMInputError) else f"training failed: {type(exc).__name__}: {exc}")
        self.machine.to(TrainState.FAILED)

    def _on_finished(self) -> None:
        self.worker = None
        if self.machine.state is TrainState.FAILED:
            return
        stopped = self._stop.is_set()
        if self._run_model is None:      # stopped before the trainer had any representation
            self.status.setText("stopped before a model existed (during the seed): no new model")
            self.machine.to(TrainState.STOPPED)
            return
        self.progress.setValue(self.progress.maximum() if not stopped else self.progress.value())
        self.status.setText(("stopped" if stopped else "done") + f": {self.status.text()}")
        if self._run_raw is not None and "calibration" in self._run_raw.meta:  # the model records it
            self._run_model.meta["calibration"] = self._run_raw.meta["calibration"]
        if self.last_event is not None and self._run_raw is not None and self._run_params is not None:
            calibrate(self._run_raw, self._run_params, self.last_event.elapsed_s,
                      1.0 if not stopped else float(self.last_event.fraction))
            self._update_estimate()
        self.machine.to(TrainState.STOPPED if stopped else TrainState.DONE)
        self._reset_view_controls(self.model)
        self.show_model_layers()


__all__ = ["ReconstructionWidget", "StopFlag"]
