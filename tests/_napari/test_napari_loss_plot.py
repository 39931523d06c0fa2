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
