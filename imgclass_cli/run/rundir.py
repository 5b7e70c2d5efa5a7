"""The run directory: model, labels, config, split, history and metrics, written atomically."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field

from imgclass_cli import files, fs
from imgclass_cli.config import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, TrainConfig
from imgclass_cli.errors import ImgclassError, first_line

VERSION_KEY = "imgclass_version"  # in config.json: the imgclass version that wrote the run


@dataclass
class RunInfo:
    """What a run directory holds besides the model."""

    path: str
    class_names: list[str]
    config: TrainConfig
    image_size: int
    extra: dict = field(default_factory=dict)


def default_out(command: str) -> str:
    return os.path.join("runs", f"{command}-{time.strftime('%Y%m%d-%H%M%S')}")


def check_out(path: str, force: bool) -> None:
    """Fail before any work if OUT exists, unless --force and it is a run directory (never a user's folder)."""
    fs.check_out(path, force, fs.RUN)


def library_versions() -> dict:
    import numpy as np
    import sklearn

    from imgclass_cli import __version__
    from imgclass_cli._tf import keras, tf

    return {
        "imgclass": __version__,
        "python": platform.python_version(),
        "tensorflow": tf().__version__,
        "keras": keras().__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }


def save(folder: str, model, class_names: list[str], config: dict, history: list[dict], metrics: dict | None,
         split_rows: list[dict]) -> None:
    model.save(os.path.join(folder, files.MODEL))
    fs.write_json_atomic(os.path.join(folder, files.LABELS), list(class_names))
    fs.write_json_atomic(os.path.join(folder, files.CONFIG), config)
    fs.write_text_atomic(os.path.join(folder, files.HISTORY), fs.rows_to_csv(history))
    fs.write_text_atomic(os.path.join(folder, files.SPLIT), fs.rows_to_csv(split_rows, ["path", "class", "split"]))
    if metrics is not None:
        fs.write_json_atomic(os.path.join(folder, files.METRICS), metrics)


def save_timings(folder: str, timings: dict) -> None:
    fs.write_json_atomic(os.path.join(folder, files.TIMINGS), timings)


def read_json(path: str):
    """A JSON file of a run or export (untrusted): exit 2 naming the file when it is not JSON imgclass can read."""
    try:
        return fs.read_json(path)
    except OSError as e:
        raise ImgclassError(f"{path}: cannot read it ({e.strerror or e})") from None
    except ValueError as e:
        raise ImgclassError(f"{path}: cannot read it as JSON ({first_line(e)})") from None


MAX_CLASSES = 100_000


def check_labels(names, source: str, field: str = "(the list)") -> list[str]:
    """Class names read from a file: a list of >= 2 unique, non-empty strings without control characters."""
    def bad(why: str):
        return ImgclassError(f"{source}: field {field} {why}; it must list the class names in index order")

    if not isinstance(names, list):
        raise bad("is not a list")
    if len(names) < 2:
        raise bad(f"has {len(names)} class name(s), expected at least 2")
    if len(names) > MAX_CLASSES:
        raise bad(f"has {len(names)} class names, more than any model imgclass reads ({MAX_CLASSES:,})")
    seen = set()
    for i, n in enumerate(names):
        if not isinstance(n, str) or not n.strip():
            raise ImgclassError(f"{source}: entry {i} of {field} is not a non-empty string")
        if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in n):
            raise ImgclassError(f"{source}: entry {i} of {field} contains a control character ({n!r:.60})")
        if n in seen:
            raise ImgclassError(f"{source}: entry {i} of {field} repeats the class name {n!r:.60}")
        seen.add(n)
    return list(names)


def read_info(path: str) -> RunInfo:
    """Labels and config of a run, without TensorFlow; both files are validated (exit 2 naming file and field)."""
    if not os.path.isdir(path):
        raise ImgclassError(f"{path}: no such run directory")
    if not os.path.exists(os.path.join(path, files.CONFIG)):
        raise ImgclassError(f"{path}: not an imgclass run directory (no {files.CONFIG}); pass the --out folder of train or finetune")
    for name in (files.MODEL, files.LABELS):
        if not os.path.exists(os.path.join(path, name)):
            raise ImgclassError(f"{path}: this run directory has no {name} (deleted or moved?); restore it or train again")
    check_model_file(os.path.join(path, files.MODEL))
    labels_path, config_path = os.path.join(path, files.LABELS), os.path.join(path, files.CONFIG)
    class_names = check_labels(read_json(labels_path), labels_path)
    raw = read_json(config_path)
    if not isinstance(raw, dict) or not isinstance(raw.get(VERSION_KEY), str):
        raise ImgclassError(f"{config_path}: field {VERSION_KEY} is missing; not an imgclass run directory")
    cfg = TrainConfig.from_dict(raw.get("options", {}), source=config_path)
    size = raw.get("image_size")
    if type(size) is not int or not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
        raise ImgclassError(f"{config_path}: field image_size is missing or invalid ({size!r:.40})")
    return RunInfo(path=path, class_names=class_names, config=cfg, image_size=size, extra=raw)


def read_split(path: str) -> list[dict]:
    """split.csv of a run (untrusted): rows of path, class and split; exit 2 naming the file and the row when it
    is not a CSV file with those columns, a path is not relative, or a split is not train, val or test."""
    import csv
    import io

    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_SPLIT_BYTES:
                raise ImgclassError(f"{path}: larger than {MAX_SPLIT_BYTES // 2**20} MB; not a split imgclass wrote")
            text = f.read().decode("utf-8")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if not {"path", "class", "split"} <= set(reader.fieldnames or ()):
            raise ImgclassError(f"{path}: not an imgclass split file (needs path, class, split columns)")
        rows = []
        for i, r in enumerate(reader):
            where = f"{path}: row {i + 2}"
            if None in r or any(r[k] is None for k in ("path", "class", "split")):
                raise ImgclassError(f"{where}: has {'more' if None in r else 'fewer'} fields than the header")
            if r["split"] not in ("train", "val", "test"):
                raise ImgclassError(f"{where}, field split: {r['split']!r:.40} is not train, val or test")
            if not r["path"] or "\0" in r["path"] or os.path.isabs(r["path"]):
                raise ImgclassError(f"{where}, field path: {r['path']!r:.80} is not a relative path")
            rows.append(r)
    except OSError as e:
        raise ImgclassError(f"{path}: cannot read it ({e.strerror or e})") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise ImgclassError(f"{path}: cannot read it as CSV ({first_line(e)})") from None
    return rows


MAX_SPLIT_BYTES = 2**30  # split.csv: about 10 million rows


def check_outputs(model, class_names: list[str], model_path: str, labels_path: str) -> None:
    """The model's number of outputs must be the number of class names."""
    n = model.output_shape[-1] if hasattr(model, "output_shape") else None
    if n != len(class_names):
        raise ImgclassError(f"{labels_path}: names {len(class_names)} classes but {model_path} has {n} outputs")


def check_model_file(path: str) -> None:
    """A .keras file is a zip archive: a truncated copy (an interrupted download or copy) fails here, in a
    millisecond and with a message that says so, not as Keras' "File not found"."""
    import zipfile

    if not zipfile.is_zipfile(path):
        raise ImgclassError(f"{path}: not a complete .keras file ({os.path.getsize(path)} bytes; truncated or "
                            "corrupt?); copy it again or train the run again")


def load(path: str):
    """(model, RunInfo) of a run directory."""
    info = read_info(path)
    from imgclass_cli.model.build import load_model

    model_path = os.path.join(path, files.MODEL)
    try:
        model = load_model(model_path)
    except Exception as e:
        raise ImgclassError(f"{model_path}: cannot load the model ({first_line(e)})") from e
    check_outputs(model, info.class_names, model_path, os.path.join(path, files.LABELS))
    return model, info
