"""Plots a person reads (colour bars clear of the next panel, phase 2 marked) and the TFLite runtime (issue 10)."""

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
        plots.pyplot().close(fig)


def test_training_curves_mark_where_phase_2_starts():
    history = [{"epoch": e, "phase": 1 if e <= 3 else 2, "loss": 1.0 / e, "accuracy": e / 6} for e in range(1, 6)]
    fig = plots.curves_figure(history)
    try:
        labels = [line.get_label() for ax in fig.axes for line in ax.lines]
        assert labels.count("phase 2 starts") == 2
        marker = next(line for line in fig.axes[0].lines if line.get_label() == "phase 2 starts")
        assert marker.get_xdata()[0] == 3.5
    finally:
        plots.pyplot().close(fig)
    fig = plots.curves_figure(history[:3])  # one phase: no marker
    try:
        assert all(line.get_label() != "phase 2 starts" for ax in fig.axes for line in ax.lines)
    finally:
        plots.pyplot().close(fig)


def test_tflite_prediction_prefers_the_litert_runtime(monkeypatch):
    """ai-edge-litert where installed (item 15); a stand-in module here, as the test env does not install it."""
    import sys
    import types

    from imgclass_cli.run import predictors

    class Interpreter:
        pass

    module = types.ModuleType("ai_edge_litert.interpreter")
    module.Interpreter = Interpreter
    monkeypatch.setitem(sys.modules, "ai_edge_litert", types.ModuleType("ai_edge_litert"))
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", module)
    assert predictors.interpreter_class() is Interpreter
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # not installed: TensorFlow's
    assert predictors.interpreter_class().__module__.startswith("tensorflow")
