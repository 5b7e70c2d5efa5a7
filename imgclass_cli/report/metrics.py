"""scikit-learn metrics -> a Report with stable, documented keys (docs/guide.md, 'metrics.json')."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np


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
    top_k_accuracy: dict[str, float]
    per_class: dict[str, ClassMetrics]
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted class, in class_names order
    extra: dict = field(default_factory=dict)  # data path, split, run, ...

    def to_dict(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        return {**extra, **d}


# The scalar keys of metrics.json, in Report's order: the table prints them, gates accept them, a test pins them.
METRIC_KEYS = tuple(f.name for f in fields(Report) if f.type == "float")


def compute_report(y_true, probs, class_names: list[str], top_ks=(1, 3, 5), extra: dict | None = None) -> Report:
    """y_true: int labels in class_names order; probs: (n, num_classes) softmax outputs."""
    from sklearn import metrics as M

    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=float)
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
        accuracy=float(M.accuracy_score(y_true, y_pred)),
        balanced_accuracy=float(np.mean([r[i] for i in present])) if present else 0.0,
        precision_macro=float(pm),
        recall_macro=float(rm),
        f1_macro=float(fm),
        precision_weighted=float(pw),
        recall_weighted=float(rw),
        f1_weighted=float(fw),
        top_k_accuracy=topk,
        per_class=per_class,
        confusion_matrix=M.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        extra=dict(extra or {}),
    )
