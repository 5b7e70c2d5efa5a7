"""What a data check finds: one `Finding` per image and issue, the kinds of issue, and which --fail-on /
--exclude-kinds name (label, leak, duplicate, quality) covers each kind."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imgclass_cli.config import AUDIT_GATE_KINDS as GATE_KINDS
from imgclass_cli.config import AUDIT_KINDS as KINDS  # noqa: F401 - the kinds, for callers
from imgclass_cli.config import AUDIT_PAIR_KINDS as PAIR_KINDS


@dataclass(frozen=True)
class Finding:
    """One issue of one image. `score` is in [0, 1], higher for a surer or worse issue (the order to look at them);
    `value` is the measurement behind it (a probability, a Hamming distance, a brightness...)."""

    kind: str
    index: int  # the image: its position in the list of images the check was given
    score: float
    value: float | None = None
    suggested: int | None = None  # label: the class the out-of-sample classifier puts the image in
    other: int | None = None  # a pair: the other image


def gate_of(kind: str) -> str:
    """The --fail-on name that covers `kind`."""
    return next(g for g, kinds in GATE_KINDS.items() if kind in kinds)


SPLIT_RANK = {"test": 0, "val": 1, "train": 2}  # which copy of a picture stays: the held-out one first


def leave_out(findings: list[Finding], pairs, labels, splits, paths, kinds) -> list[int]:
    """The images to leave out to fix the issues of `kinds` (--fail-on names): an image with a label or quality
    issue; of each group of copies (pairs of those kinds, joined), every member but one -- the one in test, else
    val, else train, then by path -- or every member when the copies carry different classes."""
    covered = {k for g in kinds for k in GATE_KINDS[g]}
    out = {f.index for f in findings if f.kind in covered and f.kind not in PAIR_KINDS}
    chosen = [p for p in pairs.tolist() if pair_kind(splits[p[0]], splits[p[1]], labels[p[0]], labels[p[1]]) in covered]
    if chosen:
        roots = groups(len(labels), np.array(chosen).reshape(-1, 3))
        members: dict[int, list[int]] = {}
        for a, b, _ in chosen:
            for i in (a, b):
                members.setdefault(int(roots[i]), []).append(i)
        for group in members.values():
            group = sorted(set(group), key=lambda i: (SPLIT_RANK.get(splits[i], 3), paths[i]))
            out |= set(group if len({labels[i] for i in group}) > 1 else group[1:])
    return sorted(out)


def pair_kind(split_a: str, split_b: str, label_a: int, label_b: int) -> str:
    """leak: in different splits; conflict: in different classes of one split; duplicate: same class and split."""
    if split_a != split_b:
        return "leak"
    return "conflict" if label_a != label_b else "duplicate"


def groups(n: int, pairs: np.ndarray) -> np.ndarray:
    """(n,) group of each image: the smallest index of its connected component of pairs (union-find)."""
    parent = np.arange(n)

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs[:, :2].tolist():
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(n)])
