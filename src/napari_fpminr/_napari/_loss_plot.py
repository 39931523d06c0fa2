"""A small live loss plot drawn with QPainter: no plotting dependency.

Log-scale loss against the training step, with a labelled step axis; the raw loss is drawn
faint and a smoothed line over it (a centred moving average in log space: the paper's schedule
alternates node depths and random depths, so the raw curve zigzags and hides the trend). The
phases of a run (the seeded pipeline's "seed", "init", "polish", "distill"; "train" for the
paper's random-init training) are shaded bands with their names; phases without a loss (seed,
init: NaN) show as bands without points.

``append(step, loss, phase)`` is cheap (list append + ``update()``, which Qt coalesces), so it can
be called for every training step; painting decimates to at most one point per pixel.
"""

from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

PHASE_TITLES = {"seed": "seed", "init": "init", "polish": "polish", "distill": "distill", "train": "train"}
_BAND_COLOURS = (QColor(60, 70, 95), QColor(48, 58, 60))


def nice_ticks(lo: float, hi: float, max_ticks: int = 6) -> list[float]:
    """Round tick values (1, 2, 5 × 10^k apart) inside ``[lo, hi]``, at most ``max_ticks``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw_step = (hi - lo) / max(1, max_ticks - 1)
    mag = 10 ** math.floor(math.log10(raw_step))
    # the finest round step that gives at most max_ticks ticks
    step = next(m * mag for m in (0.5, 1, 2, 5, 10)
                if math.floor(hi / (m * mag) + 1e-9) - math.ceil(lo / (m * mag) - 1e-9) + 1 <= max_ticks)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    v = first
    while v <= hi + 1e-9 * step:
        ticks.append(round(v, 10))
        v += step
    return ticks


def smooth_log(losses: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of ``log(losses)`` over ``window`` points (edges: shorter windows)."""
    losses = np.asarray(losses, dtype=np.float64)
    if losses.size == 0 or window <= 1:
        return losses.copy()
    logl = np.log(losses)
    csum = np.concatenate([[0.0], np.cumsum(logl)])
    half = window // 2
    idx = np.arange(losses.size)
    lo = np.clip(idx - half, 0, losses.size)
    hi = np.clip(idx + half + 1, 0, losses.size)
    return np.exp((csum[hi] - csum[lo]) / (hi - lo))


class LossPlot(QWidget):
    """Training loss against step, y on a log10 axis with decade labels, x in steps."""

    MARGIN_LEFT = 46
    MARGIN_OTHER = 8
    MARGIN_BOTTOM = 32

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._steps: list[float] = []
        self._losses: list[float] = []
        self._epoch_marks: list[float] = []
        self._phases: list[tuple[float, str]] = []      # (first step, phase name)
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("training loss (smooth L1 on amplitudes), log scale; faint: every step, "
                        "bright: smoothed; shaded bands: the phases of the run")

    # ---- data -----------------------------------------------------------------------------
    def clear(self) -> None:
        self._steps.clear()
        self._losses.clear()
        self._epoch_marks.clear()
        self._phases.clear()
        self.update()

    def append(self, step: float, loss: float, phase: str | None = None) -> None:
        """Add one point. A new ``phase`` starts a band at ``step``; non-finite or non-positive
        losses (the seed and init phases have none) are not plotted (no log)."""
        if phase is not None and (not self._phases or self._phases[-1][1] != phase):
            self._phases.append((float(step), str(phase)))
            self.update()
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

    def phases(self) -> list[tuple[float, str]]:
        """(first step, name) of each phase seen so far, in order."""
        return list(self._phases)

    def smoothing_window(self) -> int:
        n = len(self._losses)
        return int(min(201, max(5, n // 15))) | 1

    def smoothed(self) -> tuple[np.ndarray, np.ndarray]:
        """(steps, smoothed losses): the bright line, smoothed within each phase separately."""
        steps, losses = self.data()
        out = np.empty_like(losses)
        bounds = [s for s, _ in self._phases[1:]]
        seg = np.searchsorted(bounds, steps, side="right") if bounds else np.zeros(len(steps), int)
        for k in np.unique(seg):
            sel = seg == k
            out[sel] = smooth_log(losses[sel], self.smoothing_window())
        return steps, out

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        return QSize(300, 170)

    # ---- drawing --------------------------------------------------------------------------
    def _plot_rect(self) -> QRectF:
        m, ml, mb = self.MARGIN_OTHER, self.MARGIN_LEFT, self.MARGIN_BOTTOM
        return QRectF(ml, m, max(1, self.width() - ml - m), max(1, self.height() - m - mb))

    @staticmethod
    def _decimate(steps: np.ndarray, losses: np.ndarray, n_max: int) -> tuple[np.ndarray, np.ndarray]:
        if len(steps) <= n_max:
            return steps, losses
        # one point per bin: the bin's geometric mean keeps the log-scale trend honest
        edges = np.linspace(0, len(steps), n_max + 1).astype(int)
        idx = edges[:-1]
        sums = np.add.reduceat(np.log(losses), idx)
        counts = np.diff(edges)
        return steps[idx + counts // 2], np.exp(sums / counts)

    def _decimated(self, n_max: int) -> tuple[np.ndarray, np.ndarray]:
        return self._decimate(*self.data(), n_max)

    def _step_range(self) -> tuple[float, float]:
        candidates = list(self._steps) + [s for s, _ in self._phases]
        if not candidates:
            return 0.0, 1.0
        s0, s1 = min(candidates), max(candidates)
        return s0, (s1 if s1 > s0 else s0 + 1.0)

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt API)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor(38, 41, 48))
        rect = self._plot_rect()
        s0, s1 = self._step_range()
        span = s1 - s0

        def to_x(step: float) -> float:
            return rect.left() + (step - s0) / span * rect.width()

        # phase bands (behind everything), then their names (one text row per phase in turn,
        # so the names of narrow bands do not overlap, and no band covers a name)
        spans = []
        for k, (start, name) in enumerate(self._phases):
            end = self._phases[k + 1][0] if k + 1 < len(self._phases) else s1
            x0, x1 = to_x(start), to_x(max(end, start))
            spans.append((x0, name))
            painter.fillRect(QRectF(x0, rect.top(), max(1.0, x1 - x0), rect.height()),
                             _BAND_COLOURS[k % len(_BAND_COLOURS)])
        painter.setPen(QColor(200, 200, 215))
        for k, (x0, name) in enumerate(spans):
            painter.drawText(QRectF(x0 + 2, rect.top() + 1 + 12 * (k % 3), 60, 13),
                             Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop, PHASE_TITLES.get(name, name))
        painter.setPen(QPen(QColor(120, 120, 130), 1))
        painter.drawRect(rect)
        steps, losses = self._decimated(max(2, int(rect.width())))
        if len(steps) == 0:
            painter.setPen(QColor(170, 170, 180))
            painter.drawText(rect, Qt.AlignmentFlag.AlignCenter,
                             "loss (log scale)" if not self._phases else "no loss in this phase")
            painter.end()
            return
        lmin, lmax = math.log10(losses.min()), math.log10(losses.max())
        if lmax - lmin >= 1.0:          # decades: grid and labels at powers of ten
            lo, hi = math.floor(lmin), math.ceil(lmax)
            marks = [(float(d), f"1e{d}") for d in range(lo, hi + 1)]
        else:                           # less than a decade: zoom on the data, label its ends
            pad = max(0.02, 0.15 * (lmax - lmin))
            lo, hi = lmin - pad, lmax + pad
            marks = [(lmin, f"{10 ** lmin:.2g}"), (lmax, f"{10 ** lmax:.2g}")]
            if lmax - lmin < 1e-6:
                marks = marks[:1]

        def to_xy(step: float, loss: float) -> QPointF:
            fy = (math.log10(loss) - lo) / (hi - lo)
            return QPointF(to_x(step), rect.bottom() - fy * rect.height())

        # grid and labels of the log axis
        painter.setPen(QPen(QColor(70, 72, 80), 1, Qt.PenStyle.DotLine))
        for value, _ in marks:
            y = rect.bottom() - (value - lo) / (hi - lo) * rect.height()
            painter.drawLine(QPointF(rect.left(), y), QPointF(rect.right(), y))
        painter.setPen(QColor(190, 190, 200))
        for value, label in marks:
            y = rect.bottom() - (value - lo) / (hi - lo) * rect.height()
            painter.drawText(QRectF(0, y - 8, self.MARGIN_LEFT - 4, 16),
                             Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, label)
        # step axis: ticks and labels
        for tick in nice_ticks(s0, s1, max(2, int(rect.width() // 55))):
            x = to_x(tick)
            painter.setPen(QPen(QColor(120, 120, 130), 1))
            painter.drawLine(QPointF(x, rect.bottom()), QPointF(x, rect.bottom() + 3))
            painter.setPen(QColor(190, 190, 200))
            painter.drawText(QRectF(x - 30, rect.bottom() + 3, 60, 13), Qt.AlignmentFlag.AlignHCenter,
                             f"{tick:g}")
        # epoch boundaries
        painter.setPen(QPen(QColor(90, 90, 60), 1, Qt.PenStyle.DashLine))
        for mark in self._epoch_marks:
            if s0 <= mark <= s1:
                painter.drawLine(QPointF(to_x(mark), rect.top()), QPointF(to_x(mark), rect.bottom()))
        # the raw curve (faint), then the smoothed one
        path = QPainterPath(to_xy(steps[0], losses[0]))
        for s, value in zip(steps[1:], losses[1:]):
            path.lineTo(to_xy(s, value))
        painter.setPen(QPen(QColor(255, 170, 60, 90), 1.0))
        painter.drawPath(path)
        sm_steps, sm_losses = self._decimate(*self.smoothed(), max(2, int(rect.width())))
        path = QPainterPath(to_xy(sm_steps[0], sm_losses[0]))
        for s, value in zip(sm_steps[1:], sm_losses[1:]):
            path.lineTo(to_xy(s, value))
        painter.setPen(QPen(QColor(255, 190, 90), 2.0))
        painter.drawPath(path)
        painter.setPen(QColor(190, 190, 200))
        painter.drawText(QRectF(rect.left(), rect.bottom() + 16, rect.width(), 14),
                         Qt.AlignmentFlag.AlignRight, f"step {int(s1)}   loss {self._losses[-1]:.3g}")
        painter.drawText(QRectF(rect.left(), rect.bottom() + 16, rect.width(), 14),
                         Qt.AlignmentFlag.AlignLeft, "step")
        painter.end()
