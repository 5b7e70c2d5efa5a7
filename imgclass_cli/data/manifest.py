"""manifest.csv of a prepared folder: one row per source file (split, label, sha256, size, status) -> a Dataset."""

from __future__ import annotations

import csv
import io
import os


from imgclass_cli import files
from imgclass_cli.data import folders, holdout, tfrecord
from imgclass_cli.data.folders import Dataset, Sample
from imgclass_cli.errors import ImgclassError
from imgclass_cli.fs import parse_json, rows_to_csv

# path: the file inside the prepared folder (empty for bad files); source: the file relative to the source folder.
COLUMNS = ["path", "class", "split", "sha256", "width", "height", "status", "reason", "orientation", "source"]


def to_csv(rows: list[dict], tfrecords: bool = False) -> str:
    columns = COLUMNS + tfrecord.COLUMNS if tfrecords else COLUMNS
    return rows_to_csv([{k: r.get(k, "") for k in columns} for r in rows], columns)


def read(root: str) -> tuple[list[dict], dict]:
    """(rows, prepare.json) of a prepared folder (local, or a URL read through tf.io.gfile)."""
    path = os.path.join(root, files.MANIFEST)
    try:
        rows = list(csv.DictReader(io.StringIO(tfrecord.read_text(path), newline="")))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ImgclassError(f"{path}: cannot read the manifest ({e})") from None
    if rows and not {"path", "class", "split", "status"} <= set(rows[0]):
        raise ImgclassError(f"{path}: not an imgclass manifest (needs path, class, split, status columns)")
    return rows, read_info(root)


def read_info(root: str) -> dict:
    """prepare.json, validated (untrusted input): {} when there is none; exit 2 naming it when it is not a JSON
    object, or its source (the folder the manifest's source column is relative to) is not a path."""
    path = os.path.join(root, files.PREPARE_INFO)
    if not tfrecord.exists(path):
        return {}
    try:
        info = parse_json(tfrecord.read_text(path))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ImgclassError(f"{path}: cannot read it as JSON ({e})") from None
    if not isinstance(info, dict):
        raise ImgclassError(f"{path}: not a description of a prepared folder (a JSON object); run imgclass prepare again")
    source = info.get("source")
    if source is not None and (not isinstance(source, str) or "\0" in source):
        raise ImgclassError(f"{path}: field source must be the path of the source folder ({source!r:.40})")
    return info


def is_tfrecord(rows: list[dict]) -> bool:
    """A folder written by prepare --tfrecord: its manifest says in which shard each image is."""
    return bool(rows) and "shard" in rows[0]


def _source(info: dict, row: dict) -> str:
    src = info.get("source")
    return os.path.join(src, row["source"]) if src and row.get("source") else row.get("source") or row["path"]


def _inside(root: str, rel, where: str) -> str:
    """root/rel when `rel` is a relative path that stays inside the prepared folder after resolving symlinks."""
    if not isinstance(rel, str) or not rel or "\0" in rel or os.path.isabs(rel):
        raise ImgclassError(f"{where}, field path: {rel!r:.80} is not a relative path inside the prepared folder")
    if tfrecord.is_url(root):  # nothing is opened by this name (the image is a record), and a URL has no symlinks
        if ".." in rel.split("/"):
            raise ImgclassError(f"{where}, field path: {rel!r:.80} points outside the prepared folder {root}")
        return os.path.join(root, rel)
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(root, rel))
    if not real.startswith(real_root + os.sep):
        raise ImgclassError(f"{where}, field path: {rel!r:.80} points outside the prepared folder {root}; "
                            "refusing to read it (run imgclass prepare again)")
    return os.path.join(root, rel)


def samples(root: str, rows: list[dict], split: str, index: dict[str, int], info: dict | None = None) -> list[Sample]:
    out = []
    records = is_tfrecord(rows)
    shards: dict[str, bool] = {}
    for i, r in enumerate(rows):
        if r["status"] == "ok" and r["split"] == split and r["class"] in index:
            where = f"{os.path.join(root, files.MANIFEST)}: row {i + 2}"  # line numbers: the header is line 1
            p = _inside(root, r["path"], where)
            ref = tfrecord.ref_from_row(root, r, where, _source(info or {}, r), shards,
                                       len(rows)) if records else None
            if ref is None and not os.path.isfile(p):
                raise ImgclassError(f"{p}: listed in {files.MANIFEST} but missing; run imgclass prepare again")
            orientation = r.get("orientation") or "1"
            if orientation not in {str(n) for n in range(1, 9)}:
                raise ImgclassError(f"{where}, field orientation: {orientation!r:.20} is not an EXIF orientation 1-8")
            out.append(Sample(p, index[r["class"]], int(orientation), ref, _side(r.get("width")), _side(r.get("height"))))
    return sorted(out, key=lambda s: s.record.index) if records else out


def _side(text) -> int:
    """A width or height column: the number, or 0 (unknown) for anything that is not a plain positive integer."""
    return int(text) if isinstance(text, str) and text.isdigit() and 0 < len(text) < 7 else 0


def _bad(info: dict, rows: list[dict]) -> list[tuple[str, str]]:
    return [(_source(info, r), f"{r.get('reason') or 'bad file'} (found by prepare)") for r in rows if r["status"] != "ok"]


def scan(root: str, *, val_split: float, seed: int, min_classes: int = 2, exclude=None) -> Dataset:
    """The Dataset of a prepared folder: its train/val/test split, labels and bad-file list, nothing re-decoded.
    exclude: an exclude.ExcludeList (paths inside the prepared folder); its images are left out before any split."""
    rows, info = read(root)
    class_names = sorted({r["class"] for r in rows if r["status"] == "ok" and r["split"] == "train"})
    index = {c: i for i, c in enumerate(class_names)}
    splits = {s: samples(root, rows, s, index, info) for s in ("train", "val", "test")}
    splits = {s: v for s, v in splits.items() if v or s == "train"}
    unknown = sorted({r["class"] for r in rows if r["status"] == "ok" and r["class"] not in index})
    if unknown:
        raise ImgclassError(f"{root}: class(es) {', '.join(unknown)} have no training images in {files.MANIFEST}")
    left_out = folders.exclude_samples(root, class_names, splits, exclude)
    folders.check_classes(root, class_names, splits["train"], min_classes)
    if "val" not in splits and val_split > 0:
        # The same units and order as `imgclass prepare` and `train` on the source folder: copies by sha256, in
        # source path order.
        by_path = {_inside(root, r["path"], ""): r for r in rows if r["status"] == "ok" and r["split"] == "train"}
        train = splits["train"]
        splits["train"], splits["val"] = holdout.validation_split(
            train, val_split, seed, keys=[by_path[s.path].get("sha256") or s.path for s in train],
            orders=[by_path[s.path].get("source") or by_path[s.path]["path"] for s in train])
        if is_tfrecord(rows):  # records are read in their stored order
            splits = {k: tfrecord.samples_in_order(v) for k, v in splits.items()}
    return Dataset(root=root, class_names=class_names, splits=splits, skipped=_bad(info, rows),
                           layout="prepared", verified=True, excluded=left_out,
                           exclusion=exclude)


def scan_for_eval(root: str, split: str | None = None) -> Dataset:
    """A prepared folder's split to evaluate on: the given one, else test, else val."""
    rows, info = read(root)
    present = {r["split"] for r in rows if r["status"] == "ok"}
    if not present:
        raise ImgclassError(f"{os.path.join(root, files.MANIFEST)}: lists no usable image (no row with status ok); "
                            "nothing to evaluate on (run imgclass prepare again?)")
    chosen = folders.SPLIT_ALIASES.get(split, split) if split else next((s for s in ("test", "val") if s in present), None)
    if chosen not in present:
        raise ImgclassError(f"{root}: the manifest has no {split or 'test or val'} images to evaluate on; "
                            f"pass --split ({', '.join(sorted(present))})")
    class_names = sorted({r["class"] for r in rows if r["status"] == "ok" and r["split"] == chosen})
    index = {c: i for i, c in enumerate(class_names)}
    chosen_samples = samples(root, rows, chosen, index, info)
    # Bad files have no split (they never got one), so every command on a prepared folder reports all of them.
    return Dataset(root=os.path.join(root, chosen), class_names=class_names, splits={"eval": chosen_samples},
                           skipped=_bad(info, rows), layout="prepared", verified=True, eval_split=chosen)
