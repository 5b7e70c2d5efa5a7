"""The files `evaluate` writes beside metrics.json: misclassified.csv, confusion_matrix.png and reliability.png."""

from __future__ import annotations

import os

import numpy as np

from imgclass_cli import files, fs
from imgclass_cli.report import calibration, plots

MISCLASSIFIED_FIELDS = ["path", "true", "predicted", "confidence"]


def misclassified_rows(paths: list[str], y_true, probs, class_names: list[str]) -> list[dict]:
    """Every wrong prediction, the most confident mistakes first (ties keep input order)."""
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=float)
    if len(y_true) == 0:
        return []
    pred = probs.argmax(axis=1)
    conf = probs[np.arange(len(pred)), pred]
    wrong = np.flatnonzero(pred != y_true)
    wrong = wrong[np.argsort(-conf[wrong], kind="stable")]
    return [
        {"path": paths[i], "true": class_names[y_true[i]], "predicted": class_names[pred[i]],
         "confidence": f"{conf[i]:.6f}"}
        for i in wrong
    ]


def names(folder: str) -> list[str]:
    """Every file evaluate puts beside metrics.json (files.EVALUATE_FILES: `write`'s and the report's)."""
    return [os.path.join(folder, name) for name in files.EVALUATE_FILES]


def write(folder: str, evaluation, title: str = "") -> list[str]:
    """Write misclassified.csv, confusion_matrix.png and reliability.png into folder; returns the paths written.
    evaluation: probs (at the run's temperature), probs_uncalibrated (T = 1), y_true, paths, report."""
    report = evaluation.report
    rows = misclassified_rows(evaluation.paths, evaluation.y_true, evaluation.probs, report.class_names)
    csv_path = os.path.join(folder, files.MISCLASSIFIED)
    fs.write_text_atomic(csv_path, fs.rows_to_csv(rows, MISCLASSIFIED_FIELDS))
    png_path = plots.confusion_matrix(report.confusion_matrix, report.class_names,
                                      os.path.join(folder, files.CONFUSION_PNG), title=title)
    return [csv_path, png_path, reliability_png(folder, evaluation, title)]


def reliability_png(folder: str, evaluation, title: str = "") -> str:
    report = evaluation.report
    raw = evaluation.probs if evaluation.probs_uncalibrated is None else evaluation.probs_uncalibrated
    return plots.reliability(calibration.reliability_bins(raw, evaluation.y_true),
                             calibration.reliability_bins(evaluation.probs, evaluation.y_true),
                             os.path.join(folder, files.RELIABILITY_PNG),
                             temperature=report.calibration.get("temperature", 1.0),
                             ece_before=report.ece_uncalibrated, ece_after=report.ece, title=title)
