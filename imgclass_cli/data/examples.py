"""Embedded example datasets, written offline as class folders (`imgclass prepare --example digits OUT`)."""

from __future__ import annotations

import os

import numpy as np

from imgclass_cli import files, fs
from imgclass_cli.config import ExampleConfig


def write_digits(out: str, config: ExampleConfig, *, force: bool = False) -> dict[str, int]:
    """scikit-learn's 1,797 real 8x8 handwritten digits as OUT/{train,test}/<digit>/digit-NNNN.png (stratified, seeded)."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # 0-16 intensities -> 0-255 grayscale, ink dark on white like a scanned digit.
    images = (255 - np.round(digits.images * (255 / 16))).astype(np.uint8)
    idx = np.arange(len(images))
    train_idx, test_idx = train_test_split(idx, test_size=config.test_fraction, stratify=digits.target,
                                           random_state=config.seed)
    counts = {"train": 0, "test": 0}
    with fs.locked(out), fs.staged(out, force, fs.EXAMPLE) as tmp:
        for split, ids in (("train", train_idx), ("test", test_idx)):
            for i in sorted(ids):
                folder = os.path.join(tmp, split, str(digits.target[i]))
                os.makedirs(folder, exist_ok=True)
                Image.fromarray(images[i], mode="L").save(os.path.join(folder, f"digit-{i:04d}.png"))
                counts[split] += 1
        fs.write_text_atomic(os.path.join(tmp, files.SOURCE_TXT),
                             "imgclass example: scikit-learn load_digits() (UCI optical recognition of handwritten digits)\n")
    return counts
