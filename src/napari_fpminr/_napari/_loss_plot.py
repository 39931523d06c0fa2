"""A small live loss plot (log-scale y) drawn with QPainter: no plotting dependency.

``append(step, loss)`` is cheap (list append + ``update()``, which Qt coalesces), so it can be
called for every training step; painting decimates to at most one point per horizontal pixel.
"""

from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget


class LossPlot(QWidget):
    """Training loss against step, y on a log10 axis with decade labels."""

    MARGIN_LEFT = 46
    MARGIN_OTHER = 8
    MARGIN_BOTTOM = 18

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._steps: list[float] = []
        self._losses: list[float] = []
        self._epoch_marks: list[float] = []
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("training loss (smooth L1 on amplitudes), log scale")

    # ---- data -----------------------------------------------------------------------------
    def clear(self) -> None:
        self._steps.clear()
        self._losses.clear()
        self._epoch_marks.clear()
        self.update()

    def append(self, step: float, loss: float) -> None:
        """Add one point; non-finite or non-positive losses are ignored (no log)."""
        loss = float(loss)
        if not math.isfinite(loss) or loss <= 0:
            return
        self._steps.append(float(step))
        self._losses.append(loss)
        self.update()

    def mark_epoch(self, step: float) -> None:
        self._epoch_marks.append(float(step))
        self.update()

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        """(steps, losses) plotted so far."""
        return np.asarray(self._steps), np.asarray(self._losses)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        return QSize(300, 150)

    # ---- drawing --------------------------------------------------------------------------
    def _plot_rect(self) -> QRectF:
        m, ml, mb = self.MARGIN_OTHER, self.MARGIN_LEFT, self.MARGIN_BOTTOM
        return QRectF(ml, m, max(1, self.width() - ml - m), max(1, self.height() - m - mb))

    def _decimated(self, n_max: int) -> tuple[np.ndarray, np.ndarray]:
        steps, losses = self.data()
        if len(steps) <= n_max:
            return steps, losses
        # one point per bin: the bin's geometric mean keeps the log-scale trend honest
        edges = np.linspace(0, len(steps), n_max + 1).astype(int)
        idx = edges[:-1]
        logl = np.log(losses)
        sums = np.add.reduceat(logl, idx)
        counts = np.diff(edges)
        return steps[idx + counts // 2], np.exp(sums / counts)

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt API)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor(38, 41, 48))
        rect = self._plot_rect()
        painter.setPen(QPen(QColor(120, 120, 130), 1))
        painter.drawRect(rect)
        steps, losses = self._decimated(max(2, int(rect.width())))
        if len(steps) == 0:
            painter.setPen(QColor(170, 170, 180))
            painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, "loss (log scale)")
            painter.end()
            return
        lo = math.floor(math.log10(losses.min()))
        hi = math.ceil(math.log10(losses.max()))
        if hi <= lo:
            hi = lo + 1
        s0, s1 = float(steps.min()), float(steps.max())
        span = (s1 - s0) or 1.0

        def to_xy(step: float, loss: float) -> QPointF:
            fx = (step - s0) / span
            fy = (math.log10(loss) - lo) / (hi - lo)
            return QPointF(rect.left() + fx * rect.width(), rect.bottom() - fy * rect.height())

        # decade grid and labels
        painter.setPen(QPen(QColor(70, 72, 80), 1, Qt.PenStyle.DotLine))
        for dec in range(lo, hi + 1):
            y = rect.bottom() - (dec - lo) / (hi - lo) * rect.height()
            painter.drawLine(QPointF(rect.left(), y), QPointF(rect.right(), y))
        painter.setPen(QColor(190, 190, 200))
        for dec in range(lo, hi + 1):
            y = rect.bottom() - (dec - lo) / (hi - lo) * rect.height()
            painter.drawText(QRectF(0, y - 8, self.MARGIN_LEFT - 4, 16),
                             Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, f"1e{dec}")
        # epoch boundaries
        painter.setPen(QPen(QColor(90, 90, 60), 1, Qt.PenStyle.DashLine))
        for mark in self._epoch_marks:
            if s0 <= mark <= s1:
                x = rect.left() + (mark - s0) / span * rect.width()
                painter.drawLine(QPointF(x, rect.top()), QPointF(x, rect.bottom()))
        # the curve
        path = QPainterPath(to_xy(steps[0], losses[0]))
        for s, value in zip(steps[1:], losses[1:]):
            path.lineTo(to_xy(s, value))
        painter.setPen(QPen(QColor(255, 170, 60), 1.5))
        painter.drawPath(path)
        painter.setPen(QColor(190, 190, 200))
        painter.drawText(QRectF(rect.left(), rect.bottom() + 1, rect.width(), self.MARGIN_BOTTOM - 2),
                         Qt.AlignmentFlag.AlignRight, f"step {int(s1)}   loss {self._losses[-1]:.3g}")
        painter.end()
