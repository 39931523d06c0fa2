"""Widget section "Whole slide (tiles)": a tiled INR run with a progress bar over tiles.

It drives the same generator as ``fpminr reconstruct --tile`` (:func:`tiles.run.iter_tiles`) on a
napari worker thread, with the same cooperative stop, then writes one mosaic ``.fpminr`` and
opens it as a lazy multiscale layer (:mod:`._mosaic`). Data read from a file are read tile by tile
from that file; data without a file (simulations) are cut from memory. Finished tiles are kept
next to the output (``OUT.tiles/``), so a run stopped (or killed) and started again only computes
the missing tiles.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QProgressBar, QPushButton,
                            QSpinBox)

from ..errors import FPMInputError

__all__ = ["TilesPanel", "tiled_job_for", "run_tiled_mosaic"]


def tiled_job_for(raw, tile: int, overlap: int, z_range: tuple[float, float], out: Path, device: str = "auto"):
    """The :class:`TiledJob` of a seeded INR mosaic of ``raw`` (lazy file reading when it has a file)."""
    from ..tile_layout import TileLayout
    from ..tiles.local_na import tile_leds
    from ..tiles.run import TiledJob, work_dir_for
    from ..tiles.source import MemorySource, open_source

    source = open_source(raw.source) if raw.source is not None else MemorySource.from_raw(raw)
    o = source.header.optics
    layout = TileLayout(source.frame_shape, tile, overlap, o.upsample, o.dx_lr_um)
    return TiledJob(source, layout, "inr", list(z_range), work_dir_for(out), leds=tile_leds(source.header),
                    options={"train": {"device": device}})


def run_tiled_mosaic(job, out: Path, stop=None):
    """Generator for the worker thread: tile progress events, then the path of the mosaic written."""
    from ..io.mosaic_file import save_mosaic
    from ..tiles.run import iter_tiles

    event = None
    for event in iter_tiles(job, stop=stop):
        yield event
    if event is None or not event.done:
        return
    save_mosaic(out, job.layout, list(event.markers.values()), job.work_dir, job.source.header.optics,
                (float(job.planes.min()), float(job.planes.max())), meta={"job_hash": job.job_hash})
    yield out


class TilesPanel(QGroupBox):
    """Tile size, overlap, z range, Run / Stop and a progress bar over tiles."""

    def __init__(self, viewer, selected_raw: Callable[[], Any], parent=None) -> None:
        super().__init__("Whole slide (tiles)", parent)
        import threading

        self.viewer = viewer
        self.selected_raw = selected_raw
        self.worker = None
        self._stop = threading.Event()
        self.tile = QSpinBox(minimum=16, maximum=4096, value=128, singleStep=16, suffix=" px")
        self.overlap = QSpinBox(minimum=0, maximum=2048, value=16, singleStep=4, suffix=" px")
        self.z_min = QDoubleSpinBox(minimum=-500, maximum=500, value=-10, suffix=" µm")
        self.z_max = QDoubleSpinBox(minimum=-500, maximum=500, value=10, suffix=" µm")
        self.run_btn = QPushButton("Reconstruct tiles")
        self.stop_btn = QPushButton("Stop tiles")
        self.stop_btn.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form = QFormLayout(self)
        form.addRow("tile", self.tile)
        form.addRow("overlap", self.overlap)
        form.addRow("z min", self.z_min)
        form.addRow("z max", self.z_max)
        row = QHBoxLayout()
        row.addWidget(self.run_btn)
        row.addWidget(self.stop_btn)
        form.addRow(row)
        form.addRow(self.progress)
        form.addRow(self.status)
        self.run_btn.clicked.connect(self.start)
        self.stop_btn.clicked.connect(self.stop)
        self.output: Path | None = None

    def output_for(self, raw) -> Path:
        if raw.source is not None:
            return Path(raw.source).with_name(Path(raw.source).stem + ".mosaic.fpminr")
        return Path(tempfile.mkdtemp(prefix="fpminr-mosaic-")) / "mosaic.fpminr"

    def start(self) -> None:
        raw = self.selected_raw()
        if raw is None or self.worker is not None:
            return
        try:
            self.output = self.output_for(raw)
            job = tiled_job_for(raw, self.tile.value(), self.overlap.value(),
                                (self.z_min.value(), self.z_max.value()), self.output)
        except (FPMInputError, ValueError) as exc:
            show_error(str(exc))
            return
        self._stop.clear()
        self.progress.setValue(0)
        self.status.setText(f"{job.layout.n_tiles} tiles…")
        self.run_btn.setEnabled(False)
        self.stop_btn.setEnabled(True)
        self.worker = create_worker(run_tiled_mosaic, job, self.output, self._stop, _start_thread=False)
        self.worker.yielded.connect(self._on_event)
        self.worker.errored.connect(lambda exc: (show_error(str(exc)), self.status.setText(f"failed: {exc}")))
        self.worker.finished.connect(self._on_finished)
        self.worker.start()

    def stop(self) -> None:
        self._stop.set()
        self.status.setText("stopping after the tiles in progress…")

    def _on_event(self, event) -> None:
        if isinstance(event, Path):
            from ..io.mosaic_file import load_mosaic
            from ._mosaic import mosaic_layer_data

            for data, meta, kind in mosaic_layer_data(load_mosaic(event)):
                self.viewer.add_image(data, **meta)
            self.status.setText(f"mosaic written: {event}")
            return
        self.progress.setValue(int(round(1000 * event.fraction)))
        self.status.setText(event.text())

    def _on_finished(self) -> None:
        self.worker = None
        self.run_btn.setEnabled(True)
        self.stop_btn.setEnabled(False)
        if self._stop.is_set():
            self.status.setText(f"stopped: {self.status.text()} (finished tiles kept for the next run)")
