"""Take the user guide's screenshots from a real napari viewer (run under xvfb-run).

    xvfb-run -a -s "-screen 0 1600x1100x24" .venv/bin/python scripts/make_screenshots.py

Writes docs/images/{01_raw_and_widget,02_training,03_zstack,04_all_in_focus,05_sample_model}.png.
Every image is a grab of the live window (no mock-ups); the script fails if one is blank.
Opens ../shared/data/bloodsmear_green.mat when present (real data, quick-look training, about a
minute on a 2-core CPU), else the simulated sample.
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


GREEN = Path(__file__).resolve().parents[2] / "shared" / "data" / "bloodsmear_green.mat"


def main() -> int:
    from qtpy.QtWidgets import QApplication

    from napari_fpminr._napari.launch import open_viewer

    OUT.mkdir(parents=True, exist_ok=True)
    # real data when the shared UConn files are there (what a user opens), else the simulated sample
    viewer, widget = open_viewer(str(GREEN) if GREEN.is_file() else None, show=True)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1500, 1000)
    _wait(app, lambda: widget.backend_ready, 120)
    widget.form.device.setCurrentText("cpu")
    widget.form.preset.setCurrentText("quick look")
    # 1. raw data as opened: the brightest bright-field LED, widget with the expected time
    _shot(viewer, app, "01_raw_and_widget")

    widget.start()
    _wait(app, lambda: widget.last_event is not None and widget.last_event.phase == "polish"
          and widget.last_event.fraction > 0.6, 900)
    _shot(viewer, app, "02_training")
    _wait(app, lambda: widget.machine.state.value in ("done", "stopped", "failed"), 900)
    if widget.model is None:
        raise RuntimeError(f"training did not produce a model: {widget.status.text()}")
    # 3. the z-stack: amplitude on top, depth in µm on the canvas, at the stated defocus
    raw = widget.selected_raw()
    z_focus = float(raw.z_um) if raw.z_um is not None else 0.0
    viewer.dims.set_point(widget.z_axis(), z_focus)
    viewer.reset_view()
    _shot(viewer, app, "03_zstack")
    widget.show_all_in_focus()  # runs on a worker thread
    _wait(app, lambda: widget._aif_worker is None and "FPM-INR all-in-focus" in viewer.layers, 900)
    viewer.layers["FPM-INR amplitude"].visible = False
    _shot(viewer, app, "04_all_in_focus")

    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    viewer.open_sample("napari-fpminr", "tilted_model")
    viewer.dims.set_point(widget.z_axis(), -2.0)
    viewer.reset_view()
    _shot(viewer, app, "05_sample_model")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
