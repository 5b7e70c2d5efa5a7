"""Label issues by confident learning (Northcutt, Jiang and Chuang, JAIR 2021): from out-of-sample predicted
probabilities, the images whose given label the classifier confidently puts in another class.

The rule of the paper, as its C_{y~,y*} method: a class's threshold t_j is the mean probability of class j over
the images labelled j (its average self-confidence); an image counts for class j when p_j >= t_j, and of several
such classes for the most probable one; an image labelled i that counts for j != i lies off the diagonal of the
confident joint and is flagged. Like cleanlab's filter_by="confident_learning", an image whose given label is also
the top prediction is not flagged. Flagged images are ranked by self-confidence, lowest first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imgclass_cli.data.findings import Finding

_TOLERANCE = 1e-6  # p_j equal to t_j counts (cleanlab uses the same margin)


@dataclass
class ConfidentJoint:
    thresholds: np.ndarray  # (K,) t_j
    joint: np.ndarray  # (K, K) counts: rows the given label, columns the confident class
    flagged: np.ndarray  # indices of flagged images, ranked (lowest self-confidence first)
    suggested: np.ndarray  # (n,) the confident class of each image (-1: not confident of any)


def confident_joint(labels: np.ndarray, probs: np.ndarray) -> ConfidentJoint:
    """The thresholds, the confident joint and the flagged images of given `labels` (n,) and out-of-sample
    `probs` (n, K)."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n, k = probs.shape
    counts = np.bincount(labels, minlength=k)
    # t_j: the mean p_j over the images labelled j; a class without images can confidently hold none (2 > any p).
    sums = np.zeros(k)
    np.add.at(sums, labels, probs[np.arange(n), labels])
    thresholds = np.where(counts > 0, sums / np.maximum(counts, 1), 2.0)
    confident = probs >= thresholds - _TOLERANCE
    masked = np.where(confident, probs, -1.0)
    suggested = np.where(confident.any(axis=1), masked.argmax(axis=1), -1)
    joint = np.zeros((k, k), dtype=np.int64)
    ok = suggested >= 0
    np.add.at(joint, (labels[ok], suggested[ok]), 1)
    top = probs.argmax(axis=1)
    off = ok & (suggested != labels) & (top != labels)
    self_confidence = probs[np.arange(n), labels]
    flagged = np.flatnonzero(off)
    flagged = flagged[np.argsort(self_confidence[flagged], kind="stable")]
    return ConfidentJoint(thresholds, joint, flagged, suggested)


def label_issues(labels: np.ndarray, probs: np.ndarray) -> tuple[list[Finding], ConfidentJoint]:
    """One Finding per flagged image, lowest self-confidence first: score 1 - p(given label), value p(given label),
    suggested the confident class."""
    cj = confident_joint(labels, probs)
    found = []
    for i in cj.flagged:
        p = float(probs[i, labels[i]])
        found.append(Finding("label", int(i), round(1.0 - p, 6), round(p, 6), suggested=int(cj.suggested[i])))
    return found, cj
