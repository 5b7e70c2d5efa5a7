"""evaluate's report.html and mistakes.png from plain data: the metrics dict (metrics.json), the figures as PNG
bytes, and the gallery of the most confident mistakes (images and Grad-CAM overlays already drawn). The sections
a metrics.json lacks (calibration, risk-coverage) are left out."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from imgclass_cli.report import html, overlays
from imgclass_cli.report.metrics import METRIC_KEYS

# The calibration keys of metrics.json, in the order the page shows them (each when present).
CALIBRATION_KEYS = ("ece", "ece_uncalibrated", "nll", "nll_uncalibrated", "brier", "brier_uncalibrated")
RISK_COLUMNS = ("threshold", "coverage", "accuracy", "images")
FIGURE_WIDTH = 960  # CSS pixels


@dataclass
class Mistake:
    """One image of the gallery: what it is, what the model said, and its pictures (None when not readable)."""

    path: str
    true: str
    predicted: str
    confidence: float
    image: np.ndarray | None = None  # uint8 H x W x 3 at the display size
    heatmap: np.ndarray | None = None  # 0..1 at the same size: Grad-CAM of the predicted class
    note: str = ""  # why there is no image or no heatmap


@dataclass
class Gallery:
    overall: list[Mistake] = field(default_factory=list)  # the most confident mistakes, most confident first
    by_class: dict[str, list[Mistake]] = field(default_factory=dict)  # true class -> its most confident mistakes
    requested: int = 0  # --gallery N
    note: str = ""  # e.g. why there are no heatmaps


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        else None


def _temperature(metrics: dict) -> float | None:
    nested = metrics.get("calibration")
    if isinstance(nested, dict):
        return _number(nested.get("temperature"))
    return _number(metrics.get("calibration.temperature"))


def _headline(metrics: dict) -> html.Section:
    rows = [[key, _number(metrics.get(key))] for key in METRIC_KEYS if _number(metrics.get(key)) is not None]
    topk = metrics.get("top_k_accuracy")
    if isinstance(topk, dict):
        rows += [[f"top_k_accuracy.{k}", _number(v)] for k, v in topk.items() if _number(v) is not None]
    return html.Section("Metrics", [html.Table(["metric", "value"], rows)], anchor="metrics")


def _per_class(metrics: dict, gallery: Gallery) -> html.Section:
    names = list(metrics.get("class_names") or [])
    per = metrics.get("per_class") if isinstance(metrics.get("per_class"), dict) else {}
    matrix = np.asarray(metrics.get("confusion_matrix") or np.zeros((len(names), len(names))), dtype=float)
    rows = []
    for i, name in enumerate(names):
        m = per.get(name) if isinstance(per.get(name), dict) else {}
        support = int(matrix[i].sum()) if matrix.shape == (len(names), len(names)) else None
        wrong = int(support - matrix[i, i]) if support is not None else None
        label = html.Link(name, f"class-{i}") if gallery.by_class.get(name) else name
        rows.append([label, _number(m.get("precision")), _number(m.get("recall")), _number(m.get("f1")),
                     m.get("support") if isinstance(m.get("support"), int) else support, wrong])
    return html.Section("Per class", [html.Table(["class", "precision", "recall", "f1", "support", "wrong"], rows)],
                        anchor="per-class")


def _figure(png: bytes, alt: str) -> html.Image:
    """A figure shown at most FIGURE_WIDTH pixels wide (matplotlib's are wider for many classes)."""
    w, h = html.png_size(png)
    scale = min(1.0, FIGURE_WIDTH / max(w, 1))
    return html.Image(png, alt, width=round(w * scale), height=round(h * scale))


def _confusion(confusion_png: bytes | None) -> html.Section | None:
    if not confusion_png:
        return None
    return html.Section("Confusion matrix", [_figure(confusion_png, "confusion matrix: counts and row-normalized")],
                        anchor="confusion")


def _calibration(metrics: dict, reliability_png: bytes | None) -> html.Section | None:
    rows = [[key, _number(metrics.get(key))] for key in CALIBRATION_KEYS if _number(metrics.get(key)) is not None]
    if _temperature(metrics) is not None:
        rows.append(["calibration.temperature", _temperature(metrics)])
    if not rows and not reliability_png:
        return None
    blocks = [html.Table(["metric", "value"], rows)] if rows else []
    if reliability_png:
        blocks.append(_figure(reliability_png, "reliability diagram, before and after calibration"))
    return html.Section("Calibration", blocks, anchor="calibration")


def _risk_coverage(metrics: dict) -> html.Section | None:
    table = metrics.get("risk_coverage")
    rows = []
    for row in table if isinstance(table, list) else []:
        if isinstance(row, dict) and all(_number(row.get(c)) is not None for c in RISK_COLUMNS):
            rows.append([float(row["threshold"]), float(row["coverage"]), float(row["accuracy"]), int(row["images"])])
    target = metrics.get("target")
    blocks = [html.Paragraph("Coverage: the fraction of images whose top-1 confidence is at least the threshold; "
                             "accuracy: on those images.", muted=True)] if rows else []
    if rows:
        blocks.append(html.Table(list(RISK_COLUMNS), rows))
    if isinstance(target, dict) and target:
        blocks.append(html.Table(["target", "value"], [[k, _number(v) if _number(v) is not None else str(v)]
                                                       for k, v in target.items()]))
    elif target is not None and not isinstance(target, (dict, list)):
        blocks.append(html.Paragraph(f"target: {target}"))
    return html.Section("Risk and coverage", blocks, anchor="risk-coverage") if blocks else None


def _card(m: Mistake) -> html.Card:
    images = []
    if m.image is not None:
        h, w = m.image.shape[:2]
        images.append(html.Image(overlays.png(m.image), f"{m.path}", width=w, height=h))
        if m.heatmap is not None:
            images.append(html.Image(overlays.png(overlays.overlay(m.image, m.heatmap)),
                                     f"Grad-CAM of {m.predicted} on {m.path}", width=w, height=h))
    lines = [f"true: {m.true}", f"predicted: {m.predicted} ({m.confidence:.3f})", m.path]
    return html.Card(images, lines + ([m.note] if m.note else []))


def _gallery(gallery: Gallery, class_names: list[str]) -> list[html.Section]:
    if gallery.requested == 0:
        return [html.Section("Most confident mistakes", [html.Paragraph("no gallery (--gallery 0)", muted=True)],
                             anchor="mistakes")]
    intro = [html.Paragraph(gallery.note, muted=True)] if gallery.note else []
    intro.append(html.Paragraph("Each image beside its Grad-CAM heatmap for the predicted class: where the model "
                                "looked when it chose that class.", muted=True))
    overall = html.Section("Most confident mistakes", [*intro, html.Gallery([_card(m) for m in gallery.overall],
                                                                            empty="no mistakes")], anchor="mistakes")
    per = [html.Section(name, [html.Gallery([_card(m) for m in gallery.by_class[name]])], anchor=f"class-{i}")
           for i, name in enumerate(class_names) if gallery.by_class.get(name)]
    by_class = html.Section("Mistakes by true class", [html.Columns(per)] if per else
                            [html.Paragraph("no mistakes", muted=True)], anchor="mistakes-by-class")
    return [overall, by_class]


def page(metrics: dict, title: str, confusion_png: bytes | None = None, reliability_png: bytes | None = None,
         gallery: Gallery | None = None) -> str:
    """report.html as a string."""
    gallery = gallery or Gallery()
    names = list(metrics.get("class_names") or [])
    subtitle = [f"{metrics.get('num_samples', 0):,} images, {len(names)} classes"
                + (f", {metrics['split']} split" if metrics.get("split") not in (None, "all") else "")]
    subtitle += [f"{key}: {metrics[key]}" for key in ("run", "data") if isinstance(metrics.get(key), str)]
    sections = [html.Columns([_headline(metrics), _per_class(metrics, gallery)]), _confusion(confusion_png),
                _calibration(metrics, reliability_png), _risk_coverage(metrics), *_gallery(gallery, names)]
    return html.render(html.Page(title, [s for s in sections if s is not None], subtitle))


def mistakes_png(gallery: Gallery, title: str = "") -> bytes:
    """The overall gallery as one PNG (image | overlay per cell, true and predicted class above)."""
    cells = [overlays.Cell(m.image, m.heatmap, [f"true: {m.true}", f"predicted: {m.predicted} ({m.confidence:.3f})",
                                                 m.path]) for m in gallery.overall if m.image is not None]
    empty = "no gallery (--gallery 0)" if gallery.requested == 0 else "no mistakes"
    return overlays.grid_png(cells, title=title, empty=empty)
