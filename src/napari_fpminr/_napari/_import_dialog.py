"""The import dialog: a dropped folder of frames becomes a native data set, opened as raw data.

The frames say their size and data type but not the LED board, the optics or the camera's dark
level, so the dialog asks for those, calls :func:`napari_fpminr.io.frames.import_frames` (all
the logic) and adds the written set as the raw layer the reader produces. Errors appear in one
line in the dialog and as a notification.
"""

from __future__ import annotations

import weakref
from pathlib import Path

from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, Label, LineEdit, PushButton
from napari.utils.notifications import show_error, show_info

from ..errors import FPMInputError
from ..io.frames import LED_ORDERS, BoardSpec, import_frames, parse_grid
from ._layers import raw_layer_data

BOARD_CSV, BOARD_GRID = "CSV of LED positions", "regular grid"
_LAST: list[weakref.ref] = []


def _spin(label: str, value: float = 0.0, *, lo: float = 0.0, hi: float = 1e4, step: float = 0.01) -> FloatSpinBox:
    return FloatSpinBox(label=label, value=value, min=lo, max=hi, step=step)


def default_output(folder: Path) -> Path:
    """``<folder>.tif`` beside the folder: the frames folder itself stays as it was."""
    folder = Path(folder)
    return folder.with_name(folder.name + ".tif")


class ImportDialog(Container):
    """Asks for what the frames do not say; ``run()`` writes the set and opens it in ``viewer``."""

    def __init__(self, folder: str | Path, viewer=None):
        folder = Path(folder)
        csvs = sorted(folder.glob("*.csv"))
        self.viewer = viewer
        self.frames = LineEdit(label="frames", value=str(folder),
                               tooltip="the folder, or a pattern such as DIR/image*.png (natural order)")
        self.board = ComboBox(label="LED board", choices=[BOARD_CSV, BOARD_GRID],
                              value=BOARD_CSV if csvs else BOARD_GRID)
        self.led_positions = FileEdit(label="positions CSV", mode="r", filter="*.csv",
                                      value=str(csvs[0]) if len(csvs) == 1 else "",
                                      tooltip="header x_mm,y_mm, one row per frame in frame order")
        self.grid = LineEdit(label="grid (rows x cols)", value="8x8")
        self.pitch_mm = _spin("pitch (mm)", 4.0)
        self.order = ComboBox(label="order", choices=list(LED_ORDERS), value="raster")
        self.distance_mm = _spin("board distance (mm)", 0.0)
        self.centre_x_mm = _spin("board centre x (mm)", lo=-1e3, hi=1e3)
        self.centre_y_mm = _spin("board centre y (mm)", lo=-1e3, hi=1e3)
        self.wavelength_um = _spin("wavelength (µm)", hi=10.0, step=0.001)
        self.na_obj = _spin("objective NA", hi=0.99, step=0.005)
        self.mag = _spin("magnification", hi=1000.0, step=0.1)
        self.pixel_um = _spin("camera pixel (µm)", hi=100.0)
        self.saturation = LineEdit(label="saturation level", value="auto",
                                   tooltip="auto: the integer type's maximum (255 for 8-bit); none; or a number")
        self.dark_level = _spin("dark level", hi=1e9, step=1.0)
        self.dark_frame = FileEdit(label="dark frame", mode="r", value="", tooltip="optional: a frame with all LEDs off")
        self.out = FileEdit(label="write to", mode="w", filter="*.tif", value=str(default_output(folder)))
        self.button = PushButton(text="Import and open")
        self.status = Label(value="")
        super().__init__(widgets=[self.frames, self.board, self.led_positions, self.grid, self.pitch_mm, self.order,
                                  self.distance_mm, self.centre_x_mm, self.centre_y_mm, self.wavelength_um,
                                  self.na_obj, self.mag, self.pixel_um, self.saturation, self.dark_level,
                                  self.dark_frame, self.out, self.button, self.status], labels=True)
        self.board.changed.connect(self._show_board_fields)
        self.button.changed.connect(self.run)
        self._show_board_fields()

    def _show_board_fields(self, *_) -> None:
        grid = self.board.value == BOARD_GRID
        self.led_positions.visible = not grid
        for w in (self.grid, self.pitch_mm, self.order):
            w.visible = grid

    def _file(self, widget: FileEdit) -> Path | None:
        text = str(widget.value) if widget.value is not None else ""
        return Path(text) if text.strip() not in ("", ".") else None

    def board_spec(self) -> BoardSpec:
        grid = self.board.value == BOARD_GRID
        return BoardSpec(distance_mm=self.distance_mm.value, csv_path=None if grid else self._file(self.led_positions),
                         grid=parse_grid(self.grid.value) if grid else None, pitch_mm=self.pitch_mm.value,
                         order=self.order.value, centre_mm=(self.centre_x_mm.value, self.centre_y_mm.value))

    def _saturation(self):
        text = self.saturation.value.strip().lower()
        if text in ("auto", "none"):
            return None if text == "none" else "auto"
        try:
            return float(text)
        except ValueError:
            raise FPMInputError(f"saturation level must be a number, auto or none, got {text!r}") from None

    def run(self, *_):
        """Write the data set and open it; returns the layer, or None after an error (shown)."""
        from ..io import read_raw

        try:
            result = import_frames(self.frames.value, self._file(self.out), self.board_spec(),
                                   wavelength_um=self.wavelength_um.value or None, na_obj=self.na_obj.value or None,
                                   mag=self.mag.value or None, pixel_um=self.pixel_um.value or None,
                                   saturation_level=self._saturation(), dark_level=self.dark_level.value or None,
                                   dark_frame=self._file(self.dark_frame))
            layer_data = raw_layer_data(read_raw(result.out))
        except (FPMInputError, OSError) as exc:
            self.status.value = str(exc)
            show_error(str(exc))
            return None
        self.status.value = f"wrote {result.out.name}: {result.n_frames} frames"
        show_info(result.summary())
        return self._open(layer_data)

    def _open(self, layer_data):
        from napari.layers import Layer

        from ._viewer import watch

        if self.viewer is None:
            return None
        watch(self.viewer)
        return self.viewer.add_layer(Layer.create(*layer_data))


def last_dialog() -> ImportDialog | None:
    """The most recently opened dialog (tests drive it programmatically)."""
    return _LAST[-1]() if _LAST else None


def open_import_dialog(folder: str | Path, viewer=None) -> ImportDialog:
    """Show the dialog for ``folder`` docked in ``viewer`` (napari's current viewer by default)."""
    if viewer is None:
        import napari

        viewer = napari.current_viewer()
    dialog = ImportDialog(folder, viewer)
    if viewer is not None:
        viewer.window.add_dock_widget(dialog, name=f"Import frames: {Path(folder).name}", area="right")
    _LAST[:] = [weakref.ref(dialog)]
    return dialog
