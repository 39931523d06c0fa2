"""Take the user guide's screenshots from a real napari viewer (run under xvfb-run).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/make_screenshots.py

Writes docs/images/{01_raw_and_widget,02_training,03_zstack,04_all_in_focus,05_sample_model}.png.
Every image is a grab of the live window (no mock-ups); the script fails if one is blank.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def _wait(app, predicate, timeout_s: float) -> None:
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError("timed out waiting for the viewer")
        app.processEvents()
        time.sleep(0.01)


def _shot(viewer, app, name: str, canvas_only: bool = False) -> Path:
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    img = viewer.screenshot(canvas_only=canvas_only, flash=False)
    if np.asarray(img)[..., :3].std() < 1.0:
        raise RuntimeError(f"{name}: screenshot is blank")
    path = OUT / f"{name}.png"
    import imageio.v3 as iio

    iio.imwrite(path, np.asarray(img))
    print("wrote", path)
    return path


def main() -> int:
    from qtpy.QtWidgets import QApplication

    from napari_fpminr._napari.launch import open_viewer

    OUT.mkdir(parents=True, exist_ok=True)
    viewer, widget = open_viewer(show=True)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1500, 950)
    _wait(app, lambda: widget.backend_ready, 120)
    viewer.dims.set_point(0, 0)
    _shot(viewer, app, "01_raw_and_widget")

    widget.form.epochs.setValue(6)
    widget.form.z_min.setValue(-15.0)
    widget.form.z_max.setValue(15.0)
    widget.start()
    _wait(app, lambda: widget.last_event is not None and widget.last_event.fraction > 0.6, 600)
    _shot(viewer, app, "02_training")
    _wait(app, lambda: widget.machine.state.value in ("done", "stopped", "failed"), 600)
    if widget.model is None:
        raise RuntimeError(f"training did not produce a model: {widget.status.text()}")
    viewer.layers["tilted smear (simulated raw)"].visible = False
    viewer.layers["FPM-INR phase"].visible = False
    viewer.dims.set_point(widget.z_axis(), 5.0)
    _shot(viewer, app, "03_zstack")
    widget.show_all_in_focus()  # runs on a worker thread
    _wait(app, lambda: widget._aif_worker is None and "FPM-INR all-in-focus" in viewer.layers, 600)
    viewer.layers["FPM-INR amplitude"].visible = False
    _shot(viewer, app, "04_all_in_focus")

    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    viewer.open_sample("napari-fpminr", "tilted_model")
    viewer.layers[-1].visible = False   # phase
    viewer.dims.set_point(widget.z_axis(), -5.0)
    _shot(viewer, app, "05_sample_model")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
