"""prepare: write embedded example datasets as class folders (and, later, verify and split user data)."""

from __future__ import annotations

import os

import numpy as np

from imgclass_cli import rundir
from imgclass_cli.errors import ImgclassError


def write_digits(out: str, *, seed: int = 42, test_fraction: float = 0.2, force: bool = False) -> dict[str, int]:
    """scikit-learn's 1,797 real 8x8 handwritten digits as OUT/{train,test}/<digit>/digit-NNNN.png (stratified, seeded)."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    _check_example_out(out, force)
    digits = load_digits()
    # 0-16 intensities -> 0-255 grayscale, ink dark on white like a scanned digit.
    images = (255 - np.round(digits.images * (255 / 16))).astype(np.uint8)
    idx = np.arange(len(images))
    train_idx, test_idx = train_test_split(idx, test_size=test_fraction, stratify=digits.target, random_state=seed)
    counts = {"train": 0, "test": 0}
    with rundir.staged(out, force, check=_check_example_out) as tmp:
        for split, ids in (("train", train_idx), ("test", test_idx)):
            for i in sorted(ids):
                folder = os.path.join(tmp, split, str(digits.target[i]))
                os.makedirs(folder, exist_ok=True)
                Image.fromarray(images[i], mode="L").save(os.path.join(folder, f"digit-{i:04d}.png"))
                counts[split] += 1
        with open(os.path.join(tmp, "SOURCE.txt"), "w") as f:
            f.write("imgclass example: scikit-learn load_digits() (UCI optical recognition of handwritten digits)\n")
    return counts


def _check_example_out(out: str, force: bool) -> None:
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        if not force:
            raise ImgclassError(f"{out}: already exists and is not empty; pass --force or choose another folder")
        if not _is_digits_export(out):
            raise ImgclassError(f"{out}: exists and is not an imgclass example export; refusing to replace it")


def _is_digits_export(path: str) -> bool:
    try:
        with open(os.path.join(path, "SOURCE.txt")) as f:
            return f.read().startswith("imgclass example")
    except OSError:
        return False
