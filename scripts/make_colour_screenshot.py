"""The user guide's colour screenshot: a colour model of the UConn blood smear (red 630, green 532,
blue 475 nm) open in a real napari viewer, z slider on the common best focus (run under xvfb-run).

    .venv/bin/python benchmarks/bench_colour.py --parts real --cache CACHE   # writes CACHE/uconn_colour.fpminr
    xvfb-run -a -s "-screen 0 1600x1100x24" .venv/bin/python scripts/make_colour_screenshot.py CACHE/uconn_colour.fpminr

Writes docs/images/06_colour_zstack.png (a grab of the live window, no mock-up) and prints what the
shown slice is made of: the background (brightest half) and the cells (darkest tenth), as sRGB.
Fails if the background is not white or the cells are not red.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "06_colour_zstack.png"


def main() -> int:
    from qtpy.QtWidgets import QApplication

    import napari

    path = Path(sys.argv[1])
    viewer = napari.Viewer(show=True)
    layers = viewer.open(str(path), plugin="napari-fpminr")
    app = QApplication.instance()
    viewer.window._qt_window.resize(1400, 950)
    rgb = layers[-1]
    model = rgb.metadata["fpminr_colour_model"]
    focus = float(model.meta.get("common_focus_um", 0.5 * (model.z_min_um + model.z_max_um)))
    viewer.dims.set_point(0, focus)
    viewer.reset_view()
    viewer.layers.selection.active = rgb
    for _ in range(40):
        app.processEvents()
        time.sleep(0.02)
    shot = np.asarray(viewer.screenshot(canvas_only=False, flash=False))
    import imageio.v3 as iio

    OUT.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(OUT, shot)
    step = int(viewer.dims.current_step[0])
    img = np.asarray(rgb.data[step] if not rgb.multiscale else rgb.data[0][step]).reshape(-1, 3).astype(float)
    lum = img.mean(axis=1)
    background = np.median(img[lum >= np.median(lum)], axis=0)
    cells = np.median(img[lum <= np.percentile(lum, 10)], axis=0)
    print(f"wrote {OUT}: z = {rgb.translate[0] + step * rgb.scale[0]:.2f} um; background sRGB "
          f"{background.round().astype(int).tolist()}, cells {cells.round().astype(int).tolist()}")
    ok = background.min() >= 225 and cells[0] > cells[1] and cells[0] > cells[2]
    print("background white and cells red:", ok)
    viewer.close()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
