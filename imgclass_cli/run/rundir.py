"""The run directory: model, labels, config, split, history and metrics, written atomically."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field

from imgclass_cli import fs
from imgclass_cli.config import TrainConfig
from imgclass_cli.errors import ImgclassError

MODEL = "model.keras"
LABELS = "labels.json"
CONFIG = fs.RUN.marker  # config.json: its imgclass_version key marks a run directory
HISTORY = "history.csv"
METRICS = "metrics.json"
SPLIT = "split.csv"
MARKER_KEY = fs.RUN_MARKER_KEY


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


def is_run_dir(path: str) -> bool:
    return fs.is_owned(path, fs.RUN)


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
    model.save(os.path.join(folder, MODEL))
    fs.write_json_atomic(os.path.join(folder, LABELS), list(class_names))
    fs.write_json_atomic(os.path.join(folder, CONFIG), config)
    fs.write_text_atomic(os.path.join(folder, HISTORY), fs.rows_to_csv(history))
    fs.write_text_atomic(os.path.join(folder, SPLIT), fs.rows_to_csv(split_rows, ["path", "class", "split"]))
    if metrics is not None:
        fs.write_json_atomic(os.path.join(folder, METRICS), metrics)


def read_info(path: str) -> RunInfo:
    """Labels and config of a run, without TensorFlow."""
    if not os.path.isdir(path):
        raise ImgclassError(f"{path}: no such run directory")
    if not os.path.exists(os.path.join(path, CONFIG)):
        raise ImgclassError(f"{path}: not an imgclass run directory (no {CONFIG}); pass the --out folder of train or finetune")
    for name in (MODEL, LABELS):
        if not os.path.exists(os.path.join(path, name)):
            raise ImgclassError(f"{path}: this run directory has no {name} (deleted or moved?); restore it or train again")
    check_model_file(os.path.join(path, MODEL))
    try:
        with open(os.path.join(path, LABELS), encoding="utf-8") as f:
            class_names = json.load(f)
        with open(os.path.join(path, CONFIG), encoding="utf-8") as f:
            raw = json.load(f)
    except ValueError as e:
        raise ImgclassError(f"{path}: labels.json or config.json is not valid JSON ({e})") from None
    cfg = TrainConfig.from_dict(raw.get("options", {}))
    return RunInfo(path=path, class_names=class_names, config=cfg, image_size=int(raw["image_size"]), extra=raw)


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

    try:
        model = load_model(os.path.join(path, MODEL))
    except Exception as e:
        raise ImgclassError(f"{os.path.join(path, MODEL)}: cannot load the model ({str(e).splitlines()[0]})") from e
    return model, info
