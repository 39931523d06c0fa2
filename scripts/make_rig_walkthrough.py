"""The user guide's walk-through of a real acquisition as a folder of PNG frames (run under xvfb-run).

    xvfb-run -a -s "-screen 0 1600x1100x24" .venv/bin/python scripts/make_rig_walkthrough.py WORKDIR

A real measurement as a lab would bring it: the UConn green blood smear (../shared/data, 225
frames) written out as 16-bit PNG frames ``image1.png`` … ``image225.png`` plus ``leds.csv``, the
board as its builder describes it (a 4 mm spiral, 90.88 mm below a 1 mm slide, centre 0.35 mm off
the axis, and no rotation: the board's few-degree turn is left for the calibration to find). Then,
exactly as a user types them, ``fpminr import``, ``fpminr info --check`` and a default
``fpminr reconstruct``; their outputs go to ``WORKDIR/*.txt``. Finally napari opens the imported
data (the widget's data check) and the model, and the script grabs
docs/images/rig_check.png and rig_zstack.png from the live window (it fails if one is blank).
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GREEN = ROOT.parent / "shared" / "data" / "bloodsmear_green.mat"
OUT = ROOT / "docs" / "images"
IMPORT_OPTIONS = ["--led-centre-mm", "0", "0.35", "--led-distance-mm", "90.88", "--slab-thickness-mm", "1",
                  "--wavelength-um", "0.532", "--na-obj", "0.1", "--mag", "1", "--pixel-um", "1.845",
                  "--saturation", "none"]


def write_frames(folder: Path) -> Path:
    """The smear's frames as 16-bit PNGs and its board as a CSV in board coordinates (mm)."""
    import imageio.v3 as iio

    from napari_fpminr.io import read_raw
    from napari_fpminr.optics.led_array import LEDArray

    raw = read_raw(GREEN)
    folder.mkdir(parents=True, exist_ok=True)
    scale = 60000.0 / float(raw.intensities.max())
    for i, frame in enumerate(raw.intensities, start=1):
        iio.imwrite(folder / f"image{i}.png", np.round(frame * scale).astype(np.uint16))
    board = LEDArray.grid(15, 4.0, 90.88, order="spiral").select(np.arange(raw.n_leds))
    xy = board.positions_mm()
    csv = folder / "leds.csv"
    csv.write_text("x_mm,y_mm\n" + "".join(f"{x:.3f},{y:.3f}\n" for x, y in xy))
    return csv


def run(args: list[str], log: Path) -> None:
    """One ``fpminr`` command as typed, its stdout and stderr kept in ``log``."""
    from napari_fpminr.cli import main

    buf = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        code = main(args)
    text = f"$ fpminr {' '.join(args)}\n{buf.getvalue()}(exit {code}, {time.perf_counter() - t0:.0f} s)\n"
    log.write_text(text)
    print(text)
    if code != 0:
        raise SystemExit(code)


def _shot(viewer, app, name: str) -> None:
    import imageio.v3 as iio

    for _ in range(30):
        app.processEvents()
        time.sleep(0.02)
    img = np.asarray(viewer.screenshot(canvas_only=False, flash=False))
    if img[..., :3].std() < 1.0:
        raise RuntimeError(f"{name}: screenshot is blank")
    iio.imwrite(OUT / f"{name}.png", img)
    print("wrote", OUT / f"{name}.png")


def screenshots(data: Path, model: Path) -> None:
    from qtpy.QtWidgets import QApplication

    from napari_fpminr._napari._reader import read_paths
    from napari_fpminr._napari.launch import open_viewer

    viewer, widget = open_viewer(str(data), show=True)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1500, 1050)
    t0 = time.monotonic()
    while widget.check_panel.busy or "checking" in widget.check_panel.text.text():
        app.processEvents()
        time.sleep(0.05)
        if time.monotonic() - t0 > 900:
            raise TimeoutError("the data check did not finish")
    _shot(viewer, app, "rig_check")
    for layer in list(viewer.layers):  # the z-stack alone: its z slider in µm
        viewer.layers.remove(layer)
    for layer_data, meta, kind in read_paths(str(model)):
        getattr(viewer, f"add_{kind}")(layer_data, **meta)
    viewer.dims.set_point(0, 10.0)  # z in µm: near the smear's best focus
    viewer.reset_view()
    _shot(viewer, app, "rig_zstack")
    viewer.close()


def main() -> int:
    if not GREEN.is_file():
        print(f"needs {GREEN}")
        return 1
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "rig_walkthrough").resolve()
    csv = write_frames(work / "frames")
    data, model = work / "data.tif", work / "smear.fpminr"
    if not data.exists():
        run(["import", f"{work / 'frames'}/image*.png", "-o", str(data), "--led-positions", str(csv),
             *IMPORT_OPTIONS], work / "import.txt")
    if not (work / "check.txt").exists():
        run(["info", str(data), "--check"], work / "check.txt")
    if not model.exists():
        run(["reconstruct", str(data), "-o", str(model), "--z-min", "-10", "--z-max", "30", "-q"],
            work / "reconstruct.txt")
    if "--no-shots" not in sys.argv:
        OUT.mkdir(parents=True, exist_ok=True)
        screenshots(data, model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
