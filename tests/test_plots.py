"""Plots a person reads: panels that do not overlap, curves that show where phase 2 starts (issue 10, item 14)."""

from __future__ import annotations

from imgclass_cli.report import plots


def test_two_class_confusion_matrix_colour_bar_stays_clear_of_the_next_panel():
    fig = plots.confusion_figure([[3, 1], [0, 4]], ["ants", "bees"])
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        first_bar = fig.axes[2].get_tightbbox(renderer)  # the counts panel's colour bar, with its tick labels
        second_panel = fig.axes[1].get_tightbbox(renderer)  # with its class names and axis label
        assert first_bar.x1 <= second_panel.x0
    finally:
        plots._pyplot().close(fig)


def test_training_curves_mark_where_phase_2_starts():
    history = [{"epoch": e, "phase": 1 if e <= 3 else 2, "loss": 1.0 / e, "accuracy": e / 6} for e in range(1, 6)]
    fig = plots.curves_figure(history)
    try:
        labels = [line.get_label() for ax in fig.axes for line in ax.lines]
        assert labels.count("phase 2 starts") == 2
        marker = next(line for line in fig.axes[0].lines if line.get_label() == "phase 2 starts")
        assert marker.get_xdata()[0] == 3.5
    finally:
        plots._pyplot().close(fig)
    fig = plots.curves_figure(history[:3])  # one phase: no marker
    try:
        assert all(line.get_label() != "phase 2 starts" for ax in fig.axes for line in ax.lines)
    finally:
        plots._pyplot().close(fig)
