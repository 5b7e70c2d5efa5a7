"""scikit-learn metrics -> a Report with stable, documented keys (docs/guide.md, 'metrics.json'), with the
calibration of the confidence (report/calibration.py) and what the predictions look like as a whole."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np

from imgclass_cli.report import calibration as cal

# A model "collapsed" when one class takes at least COLLAPSE_SHARE of the predictions while the data holds at least
# two classes of at least COLLAPSE_MIN_CLASS_SHARE of the images each (a frozen random backbone predicts one class).
COLLAPSE_SHARE = 0.95
COLLAPSE_MIN_CLASS_SHARE = 0.10


@dataclass
class ClassMetrics:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class Report:
    class_names: list[str]
    num_samples: int
    accuracy: float
    balanced_accuracy: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    precision_weighted: float
    recall_weighted: float
    f1_weighted: float
    # Calibration of the top-1 confidence at the run's temperature, and at T = 1 (the model before calibration).
    ece: float
    nll: float
    brier: float
    ece_uncalibrated: float
    nll_uncalibrated: float
    brier_uncalibrated: float
    top_k_accuracy: dict[str, float]
    per_class: dict[str, ClassMetrics]
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted class, in class_names order
    calibration: dict = field(default_factory=dict)  # {"temperature": T, "bins": 15}
    risk_coverage: list[dict] = field(default_factory=list)  # [{threshold, coverage, accuracy, images}]
    prediction_collapse: dict = field(default_factory=dict)  # {collapsed, class, share}
    extra: dict = field(default_factory=dict)  # data path, split, run, seen_by_run, target, tta ...

    def to_dict(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        return {**extra, **d}


# The scalar keys of metrics.json, in Report's order: the table prints them, gates accept them, a test pins them.
METRIC_KEYS = tuple(f.name for f in fields(Report) if f.type == "float")
# Of those, the ones where lower is better (a gate caps them: evaluate --fail-over).
LOWER_IS_BETTER = ("ece", "nll", "brier", "ece_uncalibrated", "nll_uncalibrated", "brier_uncalibrated")


def prediction_collapse(y_true, y_pred, class_names: list[str]) -> dict:
    """{"collapsed": bool, "class": the most predicted class, "share": its share of the predictions}."""
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    n = len(y_true)
    if n == 0:
        return {"collapsed": False, "class": None, "share": 0.0}
    predicted = np.bincount(y_pred, minlength=len(class_names))
    top = int(predicted.argmax())
    share = float(predicted[top] / n)
    varied = int((np.bincount(y_true, minlength=len(class_names)) >= COLLAPSE_MIN_CLASS_SHARE * n).sum()) >= 2
    return {"collapsed": bool(varied and share >= COLLAPSE_SHARE), "class": class_names[top], "share": share}


def collapse_message(collapse: dict, n: int) -> str | None:
    """The warning for a collapsed model, or None."""
    if not collapse.get("collapsed"):
        return None
    return (f"the model predicts {collapse['class']!r} for {collapse['share']:.0%} of the {n} images, though the data "
            "holds several classes: its predictions collapsed to one class (a frozen random backbone, too few "
            "epochs or a too high learning rate?); its scores mean little")


def compute_report(y_true, probs, class_names: list[str], top_ks=(1, 3, 5), extra: dict | None = None,
                   probs_uncalibrated=None, temperature: float = 1.0) -> Report:
    """y_true: int labels in class_names order; probs: (n, num_classes) softmax outputs at the model's temperature;
    probs_uncalibrated: the same at T = 1 (default: probs, an uncalibrated model)."""
    from sklearn import metrics as M

    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=float)
    raw = probs if probs_uncalibrated is None else np.asarray(probs_uncalibrated, dtype=float)
    y_pred = probs.argmax(axis=1)
    labels = list(range(len(class_names)))
    kw = dict(labels=labels, zero_division=0)
    p, r, f, s = M.precision_recall_fscore_support(y_true, y_pred, **kw)
    present = sorted(set(y_true.tolist()))
    topk = {}
    ranked = np.argsort(-probs, axis=1, kind="stable") if len(y_true) else np.zeros((0, len(class_names)), int)
    for k in top_ks:
        if k < len(class_names):  # top-k with k >= the number of classes is always 1
            hit = (ranked[:, :k] == y_true[:, None]).any(axis=1)
            topk[f"top_{k}"] = float(hit.mean()) if len(y_true) else 0.0
    per_class = {
        name: ClassMetrics(float(p[i]), float(r[i]), float(f[i]), int(s[i])) for i, name in enumerate(class_names)
    }

    def avg(kind: str):
        # Averages over the classes present in the data: a class the data does not contain has no recall.
        return M.precision_recall_fscore_support(y_true, y_pred, labels=present, average=kind, zero_division=0)[:3]

    pm, rm, fm = avg("macro")
    pw, rw, fw = avg("weighted")
    return Report(
        class_names=list(class_names),
        num_samples=int(len(y_true)),
        accuracy=float(M.accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        balanced_accuracy=float(np.mean([r[i] for i in present])) if present else 0.0,
        precision_macro=float(pm),
        recall_macro=float(rm),
        f1_macro=float(fm),
        precision_weighted=float(pw),
        recall_weighted=float(rw),
        f1_weighted=float(fw),
        ece=cal.ece(probs, y_true),
        nll=cal.nll(probs, y_true),
        brier=cal.brier(probs, y_true),
        ece_uncalibrated=cal.ece(raw, y_true),
        nll_uncalibrated=cal.nll(raw, y_true),
        brier_uncalibrated=cal.brier(raw, y_true),
        top_k_accuracy=topk,
        per_class=per_class,
        confusion_matrix=M.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        calibration={"temperature": float(temperature), "bins": cal.ECE_BINS},
        risk_coverage=cal.risk_coverage(probs, y_true),
        prediction_collapse=prediction_collapse(y_true, y_pred, class_names),
        extra=dict(extra or {}),
    )
