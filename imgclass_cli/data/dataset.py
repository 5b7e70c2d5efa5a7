"""What a DATA argument is: a folder written by `imgclass prepare` (read through its manifest.csv, nothing
decoded again) or any folder of class folders (walked). Every command reads its data through here."""

from __future__ import annotations

import os

from imgclass_cli.config import MANIFEST
from imgclass_cli.data import folders, manifest
from imgclass_cli.data.folders import Dataset, Sample  # noqa: F401 - the types callers get back


def is_prepared(root: str) -> bool:
    return os.path.isfile(os.path.join(root, MANIFEST))


def scan(root: str, *, val_split: float, seed: int, min_classes: int = 2) -> Dataset:
    """A training Dataset; without a val split, train is split stratified and seeded into train/val."""
    folders.check_root(root)
    source = manifest if is_prepared(root) else folders
    return source.scan(root, val_split=val_split, seed=seed, min_classes=min_classes)


def scan_for_eval(root: str, split: str | None = None) -> Dataset:
    """Data to evaluate: the given split of a split layout (else test, else val), or a folder of class folders."""
    folders.check_root(root)
    source = manifest if is_prepared(root) else folders
    return source.scan_for_eval(root, split)
