"""Open napari with the FPM-INR widget docked and a file (default: the simulated sample raw set).

``fpminr gui [FILE]``, ``python -m napari_fpminr._napari.launch [FILE]`` or ``main([...])``.
FILE is raw data (opened as the raw stack, ready for Start) or a ``.fpminr`` model (opened as
lazy z-stack layers).
"""

from __future__ import annotations

import argparse
import sys

PLUGIN = "napari-fpminr"
WIDGET = "FPM-INR reconstruction"


def open_viewer(path: str | None = None, show: bool = True, viewer=None):
    """Create the viewer (or use ``viewer``), open ``path`` (or the sample raw set) and dock
    the widget. Returns ``(viewer, widget)``.
    """
    import napari

    from ._reader import read_paths
    from ._viewer import watch

    if viewer is None:
        viewer = napari.Viewer(title="FPM-INR", show=show)
    watch(viewer)
    if path is None:
        viewer.open_sample(PLUGIN, "tilted_raw")
    else:
        # our reader directly, not viewer.open: a native .tif stack is not in the manifest's
        # patterns (they leave TIFFs to napari), and a foreign file gets our one-line reason
        for data, *rest in read_paths(str(path)):
            if data is not None:
                meta, kind = rest
                getattr(viewer, f"add_{kind}")(data, **meta)
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    return viewer, widget


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fpminr gui", description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?",
                        help="raw FPM data or a .fpminr model (default: the simulated tilted smear)")
    args = parser.parse_args(argv)
    import napari

    open_viewer(args.file)
    napari.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
