"""Widget section "Data check": ``fpminr info RAW --check`` for the raw data selected in the widget.

When a measurement (any file not written by ``fpminr simulate``) is selected, the check
(:func:`napari_fpminr.calib.check.check_measurement`: saturation, background, orientation,
contradicting LEDs, frames the model cannot fit, suggestions) runs on a napari worker thread and its
lines appear in the panel, the same text the command line prints. Each data set is checked once
(the report is kept per data object); selecting other data while a check runs discards the old
check's answer. Simulated data are not checked (the real-data defaults do not apply to them).
"""

from __future__ import annotations

from typing import Any, Callable

from napari.qt.threading import create_worker
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QGroupBox, QLabel, QPushButton, QVBoxLayout

__all__ = ["CheckPanel", "check_text"]

#: running checks, kept alive until they finish even when their panel is closed first (a worker
#: collected while its thread runs aborts the process)
_RUNNING: set = set()


def check_text(raw) -> str:
    """The check's report for ``raw`` (runs on the worker thread)."""
    from ..calib.check import check_measurement

    return check_measurement(raw, device="cpu").text()


class CheckPanel(QGroupBox):
    """Shows the data check of the selected raw data; ``refresh()`` when the selection changes."""

    def __init__(self, selected_raw: Callable[[], Any], parent=None) -> None:
        super().__init__("Data check (as fpminr info --check)", parent)
        self._selected_raw = selected_raw
        self._reports: dict[int, tuple[Any, str]] = {}  # id(raw) -> (raw, text); raw kept so the id stays its
        self._running: Any = None  # the raw being checked
        self._worker = None
        self.text = QLabel("")
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.rerun_btn = QPushButton("Check again")
        self.rerun_btn.clicked.connect(lambda: self.refresh(force=True))
        layout = QVBoxLayout(self)
        layout.addWidget(self.text)
        layout.addWidget(self.rerun_btn)

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def report_for(self, raw) -> str | None:
        got = self._reports.get(id(raw))
        return got[1] if got is not None and got[0] is raw else None

    def refresh(self, force: bool = False) -> None:
        """Show the selected data's report, starting its check when there is none yet."""
        raw = self._selected_raw()
        if raw is None:
            self.text.setText("")
            return
        if raw.is_simulated:
            self.text.setText("simulated data: no check needed (the real-data defaults do not apply)")
            return
        if not force and self.report_for(raw) is not None:
            self.text.setText(self.report_for(raw))
            return
        if self._running is raw:
            return
        self._start(raw)

    def _start(self, raw) -> None:
        self._running = raw
        self.text.setText("checking the measurement (saturation, background, board orientation, bad frames)…")
        worker = create_worker(check_text, raw, _start_thread=False)
        worker.returned.connect(lambda text, r=raw: self._done(r, text))
        worker.errored.connect(lambda exc, r=raw: self._done(r, f"check failed: {exc}"))
        worker.finished.connect(lambda w=worker: self._finished(w))
        worker.finished.connect(lambda w=worker: _RUNNING.discard(w))
        self._worker = worker
        _RUNNING.add(worker)
        worker.start()

    def _done(self, raw, text: str) -> None:
        self._reports[id(raw)] = (raw, text)
        if self._running is raw:
            self._running = None
        try:
            if self._selected_raw() is raw:
                self.text.setText(text)
        except RuntimeError:  # the widget was closed while the check ran: nothing to show it in
            pass

    def _finished(self, worker) -> None:
        if self._worker is worker:
            self._worker = None
        try:
            raw = self._selected_raw()  # the selection may have changed while this one ran
        except RuntimeError:  # the widget was closed while the check ran
            return
        if raw is not None and not raw.is_simulated and self.report_for(raw) is None and self._running is None:
            self._start(raw)
