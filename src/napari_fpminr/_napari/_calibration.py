"""Widget section "Illumination calibration": the "Calibrate illumination" step with a before/after view.

It runs :func:`napari_fpminr.calib.iter_calibrate` (the same generator as ``fpminr calibrate``) on
a napari worker thread with a cooperative stop. When it finishes, the selected raw layer's data are
replaced by the calibrated data (``Calibration.apply``; the nominal data are kept and "Revert"
restores them), so the next training uses the calibration and its model records it. The view: the
bright-field disk picture (mean ``log|spectrum|`` of the bright-field raw images) with the nominal
and calibrated LED positions, i.e. the spectrum centres ``na/λ`` of the LEDs (the centres of the
bright-field disks), as two napari points layers.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout

from ..errors import FPMInputError
from ._layers import RAW_KEY

__all__ = ["CalibrationPanel", "NOMINAL_KEY", "calibration_layer_data", "led_spectrum_points"]

NOMINAL_KEY = "fpminr_raw_nominal"  # layer.metadata: the uncalibrated data (for Revert)


def led_spectrum_points(raw, na: np.ndarray) -> np.ndarray:
    """``(M, 2)`` (row, col) pixels of the LEDs' spectrum centres ``na/λ`` on the raw spectrum grid
    (pixel ``(h//2, w//2)`` is zero frequency); LEDs outside the grid are left out."""
    h, w = raw.lr_shape
    dx, lam = raw.optics.dx_lr_um, raw.optics.wavelength_um
    rows = h // 2 + na[:, 1] * h * dx / lam
    cols = w // 2 + na[:, 0] * w * dx / lam
    inside = (rows >= 0) & (rows <= h - 1) & (cols >= 0) & (cols <= w - 1)
    return np.stack([rows[inside], cols[inside]], axis=1)


def calibration_layer_data(nominal_raw, cal, name: str) -> list[tuple[Any, dict, str]]:
    """Layers of the before/after view: disk picture, nominal and calibrated LED positions."""
    from ..calib.brightfield import brightfield_spectrum_image

    disks = brightfield_spectrum_image(nominal_raw)
    lo, hi = (float(v) for v in np.percentile(disks, (1, 99.8)))
    na_obj = nominal_raw.optics.na_obj
    radius_px = na_obj * nominal_raw.lr_shape[1] * nominal_raw.optics.dx_lr_um / nominal_raw.optics.wavelength_um
    size = max(2.0, 0.12 * radius_px)
    before = led_spectrum_points(nominal_raw, nominal_raw.optics.na_illum)
    after = led_spectrum_points(nominal_raw, cal.na(nominal_raw))
    return [
        (disks, {"name": f"{name} bright-field disks (log |spectrum|)", "colormap": "gray",
                 "contrast_limits": (lo, hi if hi > lo else lo + 1.0)}, "image"),
        (before, {"name": f"{name} LEDs nominal", "face_color": "transparent", "border_color": "red",
                  "symbol": "ring", "size": size}, "points"),
        (after, {"name": f"{name} LEDs calibrated", "face_color": "lime", "border_color": "lime",
                 "symbol": "cross", "size": size}, "points"),
    ]


def calibration_events(raw, stop):
    """Worker generator: the calibration's progress events (the last one carries the result)."""
    from ..calib import iter_calibrate

    yield from iter_calibrate(raw, stop=stop)


class CalibrationPanel(QGroupBox):
    """"Calibrate illumination" / Stop / Revert, a progress bar and what the fit found."""

    def __init__(self, viewer, selected_layer: Callable[[], Any], parent=None) -> None:
        super().__init__("Illumination calibration", parent)
        self.viewer = viewer
        self.selected_layer = selected_layer
        self.worker = None
        self.calibration = None
        self._layer = None
        self._stop = threading.Event()
        self.run_btn = QPushButton("Calibrate illumination")
        self.run_btn.setToolTip("fit the LED board's shift, rotation and height, per-LED brightness and background "
                                "to the selected raw data (the next training uses the calibrated data)")
        self.stop_btn = QPushButton("Stop")
        self.revert_btn = QPushButton("Revert")
        self.revert_btn.setToolTip("use the nominal (uncalibrated) illumination again")
        self.stop_btn.setEnabled(False)
        self.revert_btn.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        lay = QVBoxLayout(self)
        row = QHBoxLayout()
        for b in (self.run_btn, self.stop_btn, self.revert_btn):
            row.addWidget(b)
        lay.addLayout(row)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        self.run_btn.clicked.connect(self.start)
        self.stop_btn.clicked.connect(self.stop)
        self.revert_btn.clicked.connect(self.revert)

    def start(self) -> None:
        layer = self.selected_layer()
        if layer is None or self.worker is not None:
            return
        raw = layer.metadata.get(NOMINAL_KEY, layer.metadata[RAW_KEY])  # always fit from the nominal data
        self._layer = layer
        self._stop.clear()
        self.progress.setValue(0)
        self.status.setText("calibrating…")
        self.run_btn.setEnabled(False)
        self.stop_btn.setEnabled(True)
        self.worker = create_worker(calibration_events, raw, self._stop, _start_thread=False)
        self.worker.yielded.connect(self._on_event)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.worker.start()

    def stop(self) -> None:
        self._stop.set()
        self.status.setText("stopping…")

    def _on_error(self, exc: BaseException) -> None:
        self.status.setText(f"failed: {exc}")
        show_error(str(exc) if isinstance(exc, FPMInputError) else f"calibration failed: {type(exc).__name__}: {exc}")

    def _on_event(self, event) -> None:
        self.progress.setValue(int(round(1000 * event.fraction)))
        self.status.setText(event.message)
        if event.calibration is not None:
            self._apply(event.calibration)

    def _apply(self, cal) -> None:
        from ..cli.calibrate import calibration_text

        layer = self._layer
        nominal = layer.metadata.get(NOMINAL_KEY, layer.metadata[RAW_KEY])
        self.calibration = cal
        if not cal.fallback:
            layer.metadata[NOMINAL_KEY] = nominal
            layer.metadata[RAW_KEY] = cal.apply(nominal)
            self.revert_btn.setEnabled(True)
        for data, meta, kind in calibration_layer_data(nominal, cal, layer.name):
            old = [ly for ly in self.viewer.layers if ly.name == meta["name"]]
            for ly in old:
                self.viewer.layers.remove(ly)
            getattr(self.viewer, f"add_{kind}")(data, **meta)
        self.status.setText(calibration_text(cal, nominal) + ("" if cal.fallback else "\napplied to the raw layer"))

    def revert(self) -> None:
        layer = self._layer
        if layer is not None and NOMINAL_KEY in layer.metadata:
            layer.metadata[RAW_KEY] = layer.metadata.pop(NOMINAL_KEY)
            self.status.setText("nominal illumination restored")
        self.revert_btn.setEnabled(False)

    def _on_finished(self) -> None:
        self.worker = None
        self.run_btn.setEnabled(True)
        self.stop_btn.setEnabled(False)
        if self._stop.is_set() and self.calibration is None:
            self.status.setText("stopped: nothing applied")
