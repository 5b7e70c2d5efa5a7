"""The one stratified, seeded splitter: prepare, train and finetune hold out validation (and test) images with it,
so the same fractions and seed give the same split whichever command splits. Copies of one picture are one unit
and always land in the same split (a copy in train and another in val would score images the model trained on)."""

from __future__ import annotations

import hashlib
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from imgclass_cli.errors import ImgclassError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Unit:
    """Images that stay together: one picture and its copies, of one class. `order` is the path of its first image
    relative to the data folder, so the split does not depend on where the folder lies."""

    key: str
    label: str | int
    order: str


def holdout_counts(n: int, val: float, test: float) -> tuple[int, int]:
    """Per-class val/test sizes of n units: fractions rounded half up, at least one unit left for train."""
    n_test = int(n * test + 0.5) if test else 0
    n_val = int(n * val + 0.5) if val else 0
    while n_test + n_val > n - 1 and (n_test or n_val):
        if n_test >= n_val:
            n_test -= 1
        else:
            n_val -= 1
    return n_val, n_test


def assign(units: Sequence[Unit], val: float, test: float, seed: int) -> dict[str, str]:
    """The split of every unit (key -> train/val/test): per class (stratified), in `order`, seeded with
    scikit-learn; test is drawn first, then val from the rest."""
    from sklearn.model_selection import train_test_split

    by_class: dict = {}
    for u in units:
        by_class.setdefault(u.label, []).append(u)
    chosen: dict[str, str] = {}
    for label in sorted(by_class, key=str):
        keys = [u.key for u in sorted(by_class[label], key=lambda u: u.order)]
        n_val, n_test = holdout_counts(len(keys), val, test)
        parts = {"train": keys, "val": [], "test": []}
        if n_test:
            parts["train"], parts["test"] = train_test_split(keys, test_size=n_test, random_state=seed)
        if n_val:
            parts["train"], parts["val"] = train_test_split(parts["train"], test_size=n_val, random_state=seed)
        for split, ks in parts.items():
            chosen.update((k, split) for k in ks)
    return chosen


def content_keys(paths: Sequence[str]) -> list[str]:
    """A key per file that is equal for byte-identical files: the sha256 of files whose size another file shares,
    else the size alone (a file of a unique size has no copy, so it is not read)."""
    sizes = []
    for p in paths:
        try:
            sizes.append(os.path.getsize(p))
        except OSError:
            sizes.append(-1)  # unreadable: its own unit (the image check reports it)
    shared = {s for s, n in Counter(sizes).items() if n > 1 and s >= 0}
    keys = []
    for i, (p, size) in enumerate(zip(paths, sizes)):
        if size in shared:
            try:
                digest = hashlib.sha256()
                with open(p, "rb") as f:
                    while chunk := f.read(1 << 20):
                        digest.update(chunk)
                keys.append(f"sha256:{digest.hexdigest()}")
                continue
            except OSError:
                pass
        keys.append(f"file:{i}" if size < 0 or size in shared else f"size:{size}")
    return keys


def group_keys(keys: Sequence[str], groups: Sequence[int]) -> list[str]:
    """Keys that also keep near-duplicates together: every image takes the key of its group's first image (groups:
    each image's group, e.g. neardup.groups over the pairs an audit found), so that validation_split and assign
    treat a group of copies as one unit, like byte-identical copies."""
    return [keys[int(g)] for g in groups]


def validation_split(samples: list, fraction: float, seed: int, *, keys: Sequence[str], orders: Sequence[str]):
    """train/finetune on data without a val/ folder: (train, val) samples, copies (equal `keys`) kept together;
    `orders`: each sample's path relative to the data folder. Each list comes back sorted by (label, path)."""
    units: dict[str, Unit] = {}
    for s, key, order in sorted(zip(samples, keys, orders), key=lambda t: t[2]):
        units.setdefault(key, Unit(key, s.label, order))  # a group's class: that of its first image
    chosen = assign(list(units.values()), fraction, 0.0, seed)
    val = [s for s, key in zip(samples, keys) if chosen[key] == "val"]
    if not val:
        need = max(2, math.ceil(0.5 / fraction))
        raise ImgclassError(
            f"too few images for a validation split: no class has the {need} images it takes for one to be held out "
            f"at --val {fraction:g}; add images, provide a val/ folder, or pass --val 0")
    train = [s for s, key in zip(samples, keys) if chosen[key] == "train"]
    order = lambda s: (s.label, s.path)  # noqa: E731 - deterministic order independent of the shuffle
    return sorted(train, key=order), sorted(val, key=order)
