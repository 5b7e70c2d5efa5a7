"""Image folders (class sub-folders, or train/val/test of class sub-folders) -> Samples and a Dataset.

The types every data module shares (Sample, Dataset), the walk with its ignore and symlink rules, the layout
checks and the seeded stratified split. A prepared folder (manifest.csv) is read by manifest.py instead;
dataset.py picks which."""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field

from imgclass_cli.config import IGNORED_NAMES
from imgclass_cli.data import exclude as exclude_mod
from imgclass_cli.data import holdout
from imgclass_cli.data.imagefile import sniff_format, why_not_image
from imgclass_cli.errors import ImgclassError

SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "test": "test"}

@dataclass
class Sample:
    path: str
    label: int
    orientation: int = 1  # EXIF orientation (1-8), applied by imagefile.decode
    record: object | None = None  # a tfrecord.RecordRef when the image is a record of a TFRecord prepared folder
    width: int = 0  # from the header (verify.screen, or a prepared folder's manifest); 0 until known
    height: int = 0


@dataclass
class Dataset:
    root: str
    class_names: list[str]
    splits: dict[str, list[Sample]]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    layout: str = "classes"  # "classes" or "splits"
    verified: bool = False  # True when every sample was decode-checked already (a prepared folder's manifest)
    eval_split: str | None = None  # the split scan_for_eval chose (test, val, ...); None: a folder of class folders
    # Decoded images kept by the decode check (verify.screen): uint8 (n, image_size, image_size, 3) per split, in
    # the order of that split's samples; empty when they did not fit in memory or were not asked for.
    images: dict = field(default_factory=dict)
    image_size: int = 0
    image_resize: str = "squash"  # the --resize mode they were decoded with
    excluded: list[str] = field(default_factory=list)  # paths left out by --exclude (data/exclude.py)
    exclusion: object | None = None  # the exclude.ExcludeList that left them out

    def counts(self, split: str) -> dict[str, int]:
        c = Counter(s.label for s in self.splits.get(split, []))
        return {name: c.get(i, 0) for i, name in enumerate(self.class_names)}


def visible_dirs(path: str) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def is_ignored(name: str) -> bool:
    """Hidden files (.DS_Store, ._x.jpg) and system files (Thumbs.db) are not data."""
    return name.startswith(".") or name in IGNORED_NAMES


def walk_images(folder: str, skipped: list) -> list[str]:
    """Image files under folder (recursively, symlinked dirs followed once, hidden entries ignored), sorted."""
    found = []
    seen = {os.path.realpath(folder)}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        keep = []
        for d in sorted(dirnames):
            if is_ignored(d):
                continue
            real = os.path.realpath(os.path.join(dirpath, d))
            here = os.path.realpath(dirpath)
            if real in seen or here == real or here.startswith(real.rstrip(os.sep) + os.sep):
                # a link to an ancestor (a loop) or a second link to the same folder: walk it once
                skipped.append((os.path.join(dirpath, d), f"symlink loop or repeated folder ({real}), not followed"))
                continue
            seen.add(real)
            keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            if is_ignored(name):
                continue
            p = os.path.join(dirpath, name)
            if sniff_format(p) is None:
                skipped.append((p, why_not_image(p)))
            else:
                found.append(p)
    return found


def scan_classes(folder: str, skipped: list) -> dict[str, list[str]]:
    classes = {c: walk_images(os.path.join(folder, c), skipped) for c in visible_dirs(folder)}
    for c, files in classes.items():
        if not files:
            skipped.append((os.path.join(folder, c), "class folder has no images, ignored"))
    return classes


def detect_layout(root: str) -> str:
    dirs = visible_dirs(root)
    if "train" in dirs or (dirs and all(d in SPLIT_ALIASES for d in dirs)):
        return "splits"
    return "classes"


def scan(root: str, *, val_split: float, seed: int, min_classes: int = 2, exclude=None) -> Dataset:
    """Scan a training folder. Without a val folder, split train stratified and seeded into train/val.
    exclude: an exclude.ExcludeList; its images are left out before the split."""
    skipped: list[tuple[str, str]] = []
    layout = detect_layout(root)
    if layout == "splits":
        per_split = {}
        for d in visible_dirs(root):
            if d in SPLIT_ALIASES:
                per_split[SPLIT_ALIASES[d]] = scan_classes(os.path.join(root, d), skipped)
        if "train" not in per_split:
            raise ImgclassError(f"{root}: has val/test folders but no train/ folder")
        class_names = sorted(c for c, files in per_split["train"].items() if files)
        for split, classes in per_split.items():
            unknown = sorted(c for c, files in classes.items() if files and c not in class_names)
            if unknown:
                raise ImgclassError(
                    f"{os.path.join(root, split)}: class folder(s) {', '.join(unknown)} have no images in train/; "
                    "add training images or remove the folder"
                )
        index = {c: i for i, c in enumerate(class_names)}
        splits = {
            split: [Sample(p, index[c]) for c in class_names for p in classes.get(c, [])]
            for split, classes in per_split.items()
        }
    else:
        classes = scan_classes(root, skipped)
        class_names = sorted(c for c, files in classes.items() if files)
        splits = {"train": [Sample(p, i) for i, c in enumerate(class_names) for p in classes[c]]}

    left_out = exclude_samples(root, class_names, splits, exclude)
    check_classes(root, class_names, splits["train"], min_classes)
    if "val" not in splits and val_split > 0:
        train = splits["train"]
        splits["train"], splits["val"] = holdout.validation_split(
            train, val_split, seed, keys=holdout.content_keys([s.path for s in train]),
            orders=[os.path.relpath(s.path, root) for s in train])
    return Dataset(root=root, class_names=class_names, splits=splits, skipped=skipped, layout=layout,
                   excluded=left_out, exclusion=exclude)


def exclude_samples(root: str, class_names: list[str], splits: dict, exclude) -> list[str]:
    """Leave out the samples an exclude list names (in place); returns their paths. A class left without training
    images is an error: the model would have an output nothing taught it."""
    left_out = []
    for split, samples in splits.items():
        splits[split], out = exclude_mod.apply(samples, exclude)
        left_out += [s.path for s in out]
    if left_out:
        present = {s.label for s in splits.get("train", [])}
        emptied = [c for i, c in enumerate(class_names) if i not in present]
        if emptied:
            raise ImgclassError(f"--exclude {exclude.source}: leaves class {', '.join(emptied)} of {root} without "
                                "training images; keep some of its images or remove the class folder")
    return left_out


def scan_for_eval(root: str, split: str | None = None) -> Dataset:
    """Scan data to evaluate: a folder of class folders, or a split layout (the given split, else test, else val)."""
    skipped: list[tuple[str, str]] = []
    folder = root
    chosen = None
    if detect_layout(root) == "splits":
        present = {SPLIT_ALIASES[d]: d for d in visible_dirs(root) if d in SPLIT_ALIASES}
        chosen = split or next((s for s in ("test", "val") if s in present), None)
        if chosen not in present:
            raise ImgclassError(f"{root}: no {split or 'test/ or val/'} folder to evaluate on; pass --split or a class folder")
        folder = os.path.join(root, present[chosen])
    classes = scan_classes(folder, skipped)
    class_names = sorted(c for c, files in classes.items() if files)
    samples = [Sample(p, i) for i, c in enumerate(class_names) for p in classes[c]]
    if not samples:
        raise no_images_error(folder)
    return Dataset(root=folder, class_names=class_names, splits={"eval": samples}, skipped=skipped, eval_split=chosen)


def check_root(root: str) -> None:
    if not os.path.exists(root):
        raise ImgclassError(f"{root}: no such folder")
    if not os.path.isdir(root):
        raise ImgclassError(f"{root}: not a folder; pass a folder with one sub-folder of images per class")


# A class name becomes a label: a line of labels.txt, a JSON string, a table cell. A control character (a newline
# splits labels.txt, ESC drives the terminal) or a byte that is not UTF-8 cannot be one.
_UNFIT_IN_LABEL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def loose_images(folder: str) -> int:
    """Image files directly in folder (not in a class sub-folder): the usual first mistake."""
    return sum(1 for e in os.scandir(folder)
               if e.is_file() and not is_ignored(e.name) and sniff_format(e.path) is not None)


def no_images_error(folder: str) -> ImgclassError:
    n = loose_images(folder)
    if n:
        where = folder.rstrip(os.sep)
        return ImgclassError(f"{where}: {n} image(s) directly in {where}{os.sep} and no class folders; put them in "
                             f"{where}{os.sep}<class>{os.sep}, one sub-folder per class")
    return ImgclassError(f"{folder}: no images found; expected one sub-folder of images per class")


def check_has_folders(root: str) -> None:
    """A cheap first look (one listdir): a folder with no sub-folders at all cannot be class folders."""
    if not visible_dirs(root):
        raise no_images_error(root)


def check_classes(root: str, class_names: list[str], train: list[Sample], min_classes: int) -> None:
    for name in class_names:
        if _UNFIT_IN_LABEL.search(name):
            raise ImgclassError(f"{root}: class folder {name!r} has a control character or a non-UTF-8 byte in its "
                                "name, which cannot be a label; rename the folder")
    if not class_names:
        raise no_images_error(root)
    if len(class_names) < min_classes:
        raise ImgclassError(
            f"{root}: only one class ({class_names[0]}) has images; a classifier needs at least {min_classes} classes"
        )
