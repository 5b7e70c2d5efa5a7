"""The run directory: model, labels, config, split, history and metrics, written atomically."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from contextlib import contextmanager

from imgclass_cli.config import RunInfo, TrainConfig
from imgclass_cli.errors import ImgclassError

MODEL = "model.keras"
LABELS = "labels.json"
CONFIG = "config.json"
HISTORY = "history.csv"
METRICS = "metrics.json"
SPLIT = "split.csv"
MARKER_KEY = "imgclass_version"


def default_out(command: str) -> str:
    return os.path.join("runs", f"{command}-{time.strftime('%Y%m%d-%H%M%S')}")


def is_run_dir(path: str) -> bool:
    try:
        with open(os.path.join(path, CONFIG)) as f:
            return MARKER_KEY in json.load(f)
    except (OSError, ValueError):
        return False


def check_out(path: str, force: bool) -> None:
    """Fail before any work if OUT exists, unless --force and it is a run directory (never a user's folder)."""
    if not os.path.exists(path):
        return
    if not force:
        raise ImgclassError(f"{path}: already exists; pass --force to replace it or choose another --out")
    if not os.path.isdir(path) or (os.listdir(path) and not is_run_dir(path)):
        raise ImgclassError(f"{path}: exists and is not an imgclass run directory; refusing to replace it even with --force")


def write_text_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: str, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def rows_to_csv(rows: list[dict], fieldnames: list[str] | None = None) -> str:
    buf = io.StringIO()
    names = fieldnames or (list(rows[0]) if rows else [])
    w = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


@contextmanager
def staged(path: str, force: bool, check=check_out):
    """Yield a temporary folder next to `path`; on success it is renamed into place in one step.

    `check(path, force)` decides, before and after the work, whether an existing `path` may be replaced.
    """
    check(path, force)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    base = os.path.basename(os.path.abspath(path))
    tmp = os.path.join(parent, f".{base}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.exists(path):
        check(path, force)
        old = os.path.join(parent, f".{base}.old-{os.getpid()}")
        os.rename(path, old)
    os.rename(tmp, path)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def save(folder: str, model, class_names: list[str], config: dict, history: list[dict], metrics: dict | None,
         split_rows: list[dict]) -> None:
    model.save(os.path.join(folder, MODEL))
    write_json_atomic(os.path.join(folder, LABELS), list(class_names))
    write_json_atomic(os.path.join(folder, CONFIG), config)
    write_text_atomic(os.path.join(folder, HISTORY), rows_to_csv(history))
    write_text_atomic(os.path.join(folder, SPLIT), rows_to_csv(split_rows, ["path", "class", "split"]))
    if metrics is not None:
        write_json_atomic(os.path.join(folder, METRICS), metrics)


def read_info(path: str) -> RunInfo:
    """Labels and config of a run, without TensorFlow."""
    if not os.path.isdir(path):
        raise ImgclassError(f"{path}: no such run directory")
    for name in (MODEL, LABELS, CONFIG):
        if not os.path.exists(os.path.join(path, name)):
            raise ImgclassError(f"{path}: not an imgclass run directory (no {name}); pass the --out folder of train or finetune")
    try:
        with open(os.path.join(path, LABELS), encoding="utf-8") as f:
            class_names = json.load(f)
        with open(os.path.join(path, CONFIG), encoding="utf-8") as f:
            raw = json.load(f)
    except ValueError as e:
        raise ImgclassError(f"{path}: labels.json or config.json is not valid JSON ({e})") from None
    cfg = TrainConfig.from_dict(raw.get("options", {}))
    return RunInfo(path=path, class_names=class_names, config=cfg, image_size=int(raw["image_size"]), extra=raw)


def load(path: str):
    """(model, RunInfo) of a run directory."""
    info = read_info(path)
    from imgclass_cli import models  # noqa: F401 - registers the custom layers before loading
    from imgclass_cli._tf import keras

    try:
        model = keras().models.load_model(os.path.join(path, MODEL), compile=False)
    except Exception as e:
        raise ImgclassError(f"{os.path.join(path, MODEL)}: cannot load the model ({str(e).splitlines()[0]})") from e
    return model, info
