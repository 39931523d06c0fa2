"""Open napari with raw data (the simulated sample by default) and the FPM-INR widget docked.

``python -m napari_fpminr._napari.launch [RAW_FILE]`` or, from Python, ``main([...])``; the
viewer is then ready for Start.
"""

from __future__ import annotations

import argparse
import sys

PLUGIN = "napari-fpminr"
WIDGET = "FPM-INR reconstruction"


def open_viewer(raw_path: str | None = None, show: bool = True):
    """Create the viewer, open the raw data and dock the widget; returns (viewer, widget)."""
    import napari

    viewer = napari.Viewer(title="FPM-INR", show=show)
    if raw_path is None:
        viewer.open_sample(PLUGIN, "tilted_raw")
    else:
        viewer.open(raw_path, plugin=PLUGIN)
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    return viewer, widget


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fpminr gui", description=__doc__.splitlines()[0])
    parser.add_argument("raw", nargs="?", help="raw FPM data file (default: the simulated tilted smear)")
    args = parser.parse_args(argv)
    import napari

    open_viewer(args.raw)
    napari.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
