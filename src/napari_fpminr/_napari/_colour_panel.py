"""Widget section "Colour (red, green, blue)": three raw layers of one field -> one colour model.

Glue only: the job is :func:`napari_fpminr.colour.job.iter_colour_prepared` (the same as
``fpminr reconstruct R G B --colour``) on a napari worker thread, with a cooperative stop. The
three channels are trained in turn; one progress bar covers the whole run and each channel has
its own loss curve. The result opens as one lazy RGB z-stack (:mod:`._colour`).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QProgressBar,
                            QPushButton, QSpinBox)

from ..errors import FPMInputError
from ._layers import RAW_KEY
from ._loss_plot import LossPlot

__all__ = ["ColourPanel", "colour_events"]

CHANNEL_NAMES = ("red", "green", "blue")


def colour_events(raws, z_range: tuple[float, float], crop_px: int, train_overrides: dict, stop, device="auto",
                  scan=None):
    """Generator for the worker thread: :class:`ColourEvent` s; the last carries the colour model."""
    from ..colour.job import ColourJob, iter_colour_prepared
    from ..recon.train import TrainConfig

    if crop_px:
        h, w = raws[0].lr_shape
        c = min(crop_px, h, w)
        raws = [r.crop((h - c) // 2, (w - c) // 2, c, c) for r in raws]
    job = ColourJob(method="inr", z_min_um=float(z_range[0]), z_max_um=float(z_range[1]), device=device,
                    train_config=TrainConfig(device=device, **train_overrides))
    if scan is not None:
        job.scan = scan
    yield from iter_colour_prepared(raws, job, stop=stop, device=device)


class ColourPanel(QGroupBox):
    """Three raw-layer choices, z range, crop, Run / Stop, one progress bar, a loss curve per channel."""

    def __init__(self, viewer, parent=None) -> None:
        super().__init__("Colour (red, green, blue)", parent)
        self.viewer = viewer
        self.worker = None
        self._stop = threading.Event()
        self.train_overrides: dict[str, Any] = {}
        self.scan = None  # focus scan settings (None: the core's defaults)
        self.combos = [QComboBox() for _ in CHANNEL_NAMES]
        self.z_min = QDoubleSpinBox(minimum=-500, maximum=500, value=-5, suffix=" µm")
        self.z_max = QDoubleSpinBox(minimum=-500, maximum=500, value=5, suffix=" µm")
        self.crop = QSpinBox(minimum=0, maximum=8192, value=64, singleStep=16, suffix=" px")
        self.crop.setSpecialValueText("whole field")
        self.run_btn = QPushButton("Reconstruct colour")
        self.stop_btn = QPushButton("Stop colour")
        self.stop_btn.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.loss_plots = [LossPlot() for _ in CHANNEL_NAMES]
        form = QFormLayout(self)
        for name, combo in zip(CHANNEL_NAMES, self.combos, strict=True):
            form.addRow(name, combo)
        form.addRow("z min (green)", self.z_min)
        form.addRow("z max (green)", self.z_max)
        form.addRow("central crop", self.crop)
        row = QHBoxLayout()
        row.addWidget(self.run_btn)
        row.addWidget(self.stop_btn)
        form.addRow(row)
        form.addRow(self.progress)
        plots = QHBoxLayout()
        for name, plot in zip(CHANNEL_NAMES, self.loss_plots, strict=True):
            plot.setToolTip(f"{name} channel loss")
            plots.addWidget(plot)
        form.addRow(plots)
        form.addRow(self.status)
        self.run_btn.clicked.connect(self.start)
        self.stop_btn.clicked.connect(self.stop)
        self.model = None
        viewer.layers.events.inserted.connect(self.refresh_layers)
        viewer.layers.events.removed.connect(self.refresh_layers)
        self.refresh_layers()

    # ---- layers ---------------------------------------------------------------------------
    def raw_layers(self) -> list[Any]:
        return [ly for ly in self.viewer.layers if RAW_KEY in getattr(ly, "metadata", {})]

    def refresh_layers(self, *_: Any) -> None:
        """Offer every raw layer in each choice; preselect by wavelength (longest for red)."""
        layers = self.raw_layers()
        by_lambda = sorted(layers, key=lambda ly: -ly.metadata[RAW_KEY].optics.wavelength_um)
        for k, combo in enumerate(self.combos):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([ly.name for ly in layers])
            names = [ly.name for ly in layers]
            if current in names:
                combo.setCurrentText(current)
            elif len(by_lambda) >= 3:
                combo.setCurrentText(by_lambda[[0, len(by_lambda) // 2, -1][k]].name)
            combo.blockSignals(False)

    def selected_raws(self) -> list[Any]:
        named = {ly.name: ly.metadata[RAW_KEY] for ly in self.raw_layers()}
        return [named.get(c.currentText()) for c in self.combos]

    # ---- run ------------------------------------------------------------------------------
    def start(self) -> None:
        raws = self.selected_raws()
        if self.worker is not None:
            return
        if any(r is None for r in raws) or len({id(r) for r in raws}) != 3:
            show_error("choose three different raw layers (red, green, blue)")
            return
        self._stop.clear()
        self.progress.setValue(0)
        for plot in self.loss_plots:
            plot.clear()
        self.status.setText("preparing…")
        self.run_btn.setEnabled(False)
        self.stop_btn.setEnabled(True)
        self.worker = create_worker(colour_events, raws, (self.z_min.value(), self.z_max.value()),
                                    self.crop.value(), dict(self.train_overrides), self._stop, scan=self.scan,
                                    _start_thread=False)
        self.worker.yielded.connect(self._on_event)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.worker.start()

    def stop(self) -> None:
        self._stop.set()
        self.status.setText("stopping…")

    def _on_error(self, exc: BaseException) -> None:
        message = str(exc) if isinstance(exc, FPMInputError) else f"colour reconstruction failed: {exc}"
        show_error(message)
        self.status.setText(message)

    def _on_event(self, event) -> None:
        self.progress.setValue(int(round(1000 * event.fraction)))
        self.status.setText(event.message)
        if event.channel is not None and event.stage == "reconstruct" and np.isfinite(event.loss):
            self.loss_plots[event.channel].append(float(event.step), float(event.loss))
        if event.result is not None:
            from ._colour import colour_layer_data

            self.model = event.result
            for data, meta, _kind in colour_layer_data(event.result):
                self.viewer.add_image(data, **meta)
            self.status.setText("colour model ready:\n" + event.result.summary())

    def _on_finished(self) -> None:
        self.worker = None
        self.run_btn.setEnabled(True)
        self.stop_btn.setEnabled(False)
