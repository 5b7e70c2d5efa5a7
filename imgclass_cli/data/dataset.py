"""What a DATA argument is: a folder written by `imgclass prepare` (read through its manifest.csv, nothing
decoded again; with --tfrecord its images are records in shard files) or any folder of class folders (walked).
Every command reads its data through here. A URL (gs://...) must be a TFRecord prepared folder."""

from __future__ import annotations

import os


from imgclass_cli import files
from imgclass_cli.data import folders, manifest, tfrecord
from imgclass_cli.data.folders import Dataset, Sample  # noqa: F401 - the types callers get back
from imgclass_cli.errors import ImgclassError


def is_prepared(root: str) -> bool:
    path = os.path.join(root, files.MANIFEST)
    return tfrecord.exists(path) if tfrecord.is_url(root) else os.path.isfile(path)


def check_root(root: str) -> None:
    """A local folder, or a URL holding a TFRecord prepared folder (the only kind read through tf.io.gfile)."""
    if not tfrecord.is_url(root):
        folders.check_root(root)
    elif not is_prepared(root):
        what = "no such folder" if not tfrecord.isdir(root) else f"no {files.MANIFEST}"
        raise ImgclassError(f"{root}: {what}; a URL must be a folder written by imgclass prepare --tfrecord "
                            "(copied there whole)")


def scan(root: str, *, val_split: float, seed: int, min_classes: int = 2, exclude=None) -> Dataset:
    """A training Dataset; without a val split, train is split stratified and seeded into train/val. exclude:
    an exclude.ExcludeList whose images are left out first (data.excluded lists them)."""
    check_root(root)
    source = manifest if is_prepared(root) else folders
    return source.scan(root, val_split=val_split, seed=seed, min_classes=min_classes, exclude=exclude)


def scan_for_eval(root: str, split: str | None = None) -> Dataset:
    """Data to evaluate: the given split of a split layout (else test, else val), or a folder of class folders."""
    check_root(root)
    source = manifest if is_prepared(root) else folders
    return source.scan_for_eval(root, split)


def is_tfrecord(root: str) -> bool:
    """A folder written by prepare --tfrecord (local or a URL)."""
    if not (tfrecord.isdir(root) and is_prepared(root)):
        return False
    return manifest.is_tfrecord(manifest.read(root)[0])


def records(root: str) -> list[Sample]:
    """Every image of a TFRecord prepared folder, split by split (train, val, test), each in record order."""
    rows, info = manifest.read(root)
    names = sorted({r["class"] for r in rows if r["status"] == "ok"})
    index = {c: i for i, c in enumerate(names)}
    return [s for split in ("train", "val", "test") for s in manifest.samples(root, rows, split, index, info)]


def longer_side(sample: Sample) -> int | None:
    """The stored image's longer side of a record (from the manifest: the records are not read for it)."""
    return sample.record.size if sample.record is not None else None
