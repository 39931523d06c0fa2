import numpy as np

from napari_fpminr._napari._loss_plot import LossPlot


def test_loss_plot_keeps_points_and_draws_a_curve(qtbot):
    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(300, 150)
    blank = plot.grab().toImage()
    for step in range(500):
        plot.append(step, 10.0 ** (-step / 250))
    plot.append(500, float("nan"))   # ignored: not plottable on a log axis
    plot.append(501, 0.0)
    steps, losses = plot.data()
    assert len(steps) == 500 and losses[-1] < losses[0]
    img = plot.grab().toImage()
    # the orange curve is drawn: many pixels differ from the empty plot
    changed = sum(img.pixel(x, y) != blank.pixel(x, y) for x in range(0, 300, 3) for y in range(0, 150, 3))
    assert changed > 50
    plot.clear()
    assert plot.data()[0].size == 0


def test_decimation_preserves_log_trend(qtbot):
    plot = LossPlot()
    for step in range(10000):
        plot.append(step, np.exp(-step / 2000))
    steps, losses = plot._decimated(100)
    assert len(steps) == 100
    assert np.all(np.diff(losses) < 0)
    assert 0.9 < losses[0] <= 1.0


# ---- issue 9, point 10: step axis, smoothed line, phases -----------------------------------
def _lightness(img, x0, y0, x1, y1):
    from qtpy.QtGui import QColor

    return np.array([[QColor(img.pixel(x, y)).lightness() for x in range(x0, x1)] for y in range(y0, y1)])


def test_step_axis_has_round_tick_labels(qtbot):
    from napari_fpminr._napari._loss_plot import nice_ticks

    assert nice_ticks(0, 500, 6) == [0, 100, 200, 300, 400, 500]
    assert nice_ticks(13, 97, 5) == [20, 40, 60, 80]
    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(320, 170)
    for step in range(300):
        plot.append(step, 10.0 ** (-step / 150))
    img = plot.grab().toImage()
    rect = plot._plot_rect()
    # tick labels are drawn under the plot area (a row of text pixels below its bottom edge)
    below = _lightness(img, int(rect.left()), int(rect.bottom()) + 4, int(rect.right()), int(rect.bottom()) + 15)
    assert (below > 150).sum() > 30


def test_smoothed_line_follows_the_trend_through_the_zigzag(qtbot):
    plot = LossPlot()
    qtbot.addWidget(plot)
    steps = np.arange(400)
    trend = 1e-1 * np.exp(-steps / 200)
    zigzag = trend * np.where(steps % 2 == 0, 3.0, 1 / 3.0)     # odd/even epochs alternate
    for s, v in zip(steps, zigzag):
        plot.append(int(s), float(v))
    _, smooth = plot.smoothed()
    raw_tv = np.abs(np.diff(np.log(zigzag))).sum()
    smooth_tv = np.abs(np.diff(np.log(smooth))).sum()
    assert smooth_tv < 0.1 * raw_tv                              # the zigzag is gone ...
    inner = slice(20, -20)
    np.testing.assert_allclose(np.log(smooth[inner]), np.log(trend[inner]), atol=0.25)  # ... the trend kept


def test_phases_are_labelled_and_nan_losses_skipped(qtbot):
    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(320, 170)
    blank = plot.grab().toImage()
    for step in range(1, 11):
        plot.append(step, float("nan"), "seed")                 # the seed has no loss
    plot.append(11, float("nan"), "init")
    for step in range(12, 112):
        plot.append(step, 1e-2 * np.exp(-step / 60), "polish")
    assert plot.phases() == [(1.0, "seed"), (11.0, "init"), (12.0, "polish")]
    steps, losses = plot.data()
    assert len(steps) == 100 and np.all(np.isfinite(losses))
    img = plot.grab().toImage()
    rect = plot._plot_rect()
    # the seed band is shaded: its background differs from the empty plot's
    x_seed = int(rect.left() + 0.04 * rect.width())
    y_mid = int(rect.top() + 0.8 * rect.height())
    assert img.pixel(x_seed, y_mid) != blank.pixel(x_seed, y_mid)
    plot.clear()
    assert plot.phases() == [] and plot.data()[0].size == 0


def test_less_than_a_decade_is_zoomed_not_flat(qtbot):
    """A polish that lowers the loss by 10 % must not look like a flat line on a decade axis."""
    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(320, 170)
    for step in range(100):
        plot.append(step, 0.0225 - 0.0004 * step / 100 + 0.0002 * (step % 2), "polish")
    img = plot.grab().toImage()
    rect = plot._plot_rect()
    from qtpy.QtGui import QColor

    rows = [y for y in range(int(rect.top()) + 1, int(rect.bottom()))
            if any(QColor(img.pixel(x, y)).red() > 200 and QColor(img.pixel(x, y)).blue() < 150
                   for x in range(int(rect.left()) + 2, int(rect.right()) - 2, 2))]
    assert rows and max(rows) - min(rows) > 0.1 * rect.height()   # decade axis: ~2 px
