"""One interface over everything `predict` accepts: a run directory, an export directory, or a .tflite file.

A predictor takes a float32 batch (n, image_size, image_size, 3) of 0-255 RGB decoded and resized by
`imagefile.decode` and returns softmax probabilities (n, num_classes) in `class_names` order.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass

import numpy as np

from imgclass_cli import fs
from imgclass_cli._tf import quiet_native_stderr
from imgclass_cli.errors import ImgclassError
from imgclass_cli.run import rundir

EXPORT_INFO = fs.EXPORT.marker  # export.json
LABELS_TXT = "labels.txt"
TFLITE_FILE = "model.tflite"
SAVEDMODEL_DIR = "saved_model"
KERAS_FILE = "model.keras"


@dataclass
class Target:
    """What a predict/export path points at, found without TensorFlow."""

    kind: str  # run | tflite | savedmodel | keras
    path: str  # the model file or folder
    class_names: list[str]
    image_size: int | None


def _labels_beside(folder: str) -> list[str]:
    j, t = os.path.join(folder, rundir.LABELS), os.path.join(folder, LABELS_TXT)
    if os.path.exists(j):
        with open(j, encoding="utf-8") as f:
            return list(json.load(f))
    if os.path.exists(t):
        with open(t, encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f if line.strip()]
    raise ImgclassError(f"{folder}: no labels.json or labels.txt beside the model; it names the classes in index order")


def resolve(path: str) -> Target:
    """Recognise a run directory, an export directory (export.json) or a .tflite file."""
    if os.path.isfile(path) and path.endswith(".tflite"):
        return Target("tflite", path, _labels_beside(os.path.dirname(path) or "."), None)
    if os.path.isdir(path) and os.path.exists(os.path.join(path, EXPORT_INFO)):
        try:
            with open(os.path.join(path, EXPORT_INFO), encoding="utf-8") as f:
                meta = json.load(f)
            fmt = meta["format"]
            model = os.path.join(path, meta["model"])
        except (ValueError, KeyError) as e:
            raise ImgclassError(f"{path}: {EXPORT_INFO} is not a valid imgclass export description ({e})") from None
        return Target(fmt, model, _labels_beside(path), meta.get("image_size"))
    if path.endswith(".tflite") and not os.path.exists(path):
        raise ImgclassError(f"{path}: no such file")
    info = rundir.read_info(path)  # raises "no such run directory" / "not an imgclass run directory"
    return Target("run", path, info.class_names, info.image_size)


class KerasPredictor:
    def __init__(self, model, class_names: list[str], image_size: int):
        self.model, self.class_names, self.image_size = model, class_names, image_size

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.model(images, training=False).numpy()


class SavedModelPredictor:
    def __init__(self, path: str, class_names: list[str], image_size: int):
        from imgclass_cli._tf import tf

        self.fn = tf().saved_model.load(path).signatures["serving_default"]
        self.class_names, self.image_size = class_names, image_size

    def predict(self, images: np.ndarray) -> np.ndarray:
        out = self.fn(image=np.asarray(images, dtype=np.float32))
        return next(iter(out.values())).numpy()


def interpreter_class():
    """The LiteRT runtime (`pip install imgclass[litert]`, package ai-edge-litert) where installed; else
    TensorFlow's tf.lite.Interpreter, deprecated in its favour (its deprecation warning is silenced)."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        from imgclass_cli._tf import tf

        warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated.*")
        return tf().lite.Interpreter


class TFLitePredictor:
    """A TFLite interpreter with a batch dimension that follows the input (resized only when it changes)."""

    def __init__(self, path: str, class_names: list[str], image_size: int | None = None, num_threads: int | None = None):
        try:
            with quiet_native_stderr():
                self.interp = interpreter_class()(model_path=path, num_threads=num_threads or os.cpu_count())
        except ValueError as e:
            raise ImgclassError(f"{path}: not a TFLite model ({str(e).splitlines()[0]})") from None
        self.input = self.interp.get_input_details()[0]
        self.output = self.interp.get_output_details()[0]
        shape = self.input["shape_signature"]
        if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2] or shape[1] <= 0:
            raise ImgclassError(f"{path}: expected an input of shape (batch, size, size, 3), found {list(shape)}")
        self.image_size = int(shape[1])
        if image_size is not None and image_size != self.image_size:
            raise ImgclassError(f"{path}: input size {self.image_size} differs from export.json's {image_size}")
        self.class_names = class_names
        n_out = int(self.output["shape_signature"][-1])
        if n_out != len(class_names):
            raise ImgclassError(f"{path}: the model has {n_out} outputs but the labels file names {len(class_names)} classes")
        self.fixed_batch = int(shape[0]) if shape[0] > 0 else None
        self.batch = None

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.batch != len(x):
            self.interp.resize_tensor_input(self.input["index"], list(x.shape))
            with quiet_native_stderr():
                self.interp.allocate_tensors()
            self.batch = len(x)
        self.interp.set_tensor(self.input["index"], x)
        self.interp.invoke()
        return self.interp.get_tensor(self.output["index"]).copy()

    def predict(self, images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, dtype=np.float32)
        if self.fixed_batch is None:
            return self._run(x)
        step = self.fixed_batch  # a model exported with batch 1: feed it one image at a time
        return np.concatenate([self._run(x[i:i + step]) for i in range(0, len(x), step)])


def load(path: str):
    """A predictor for a run directory, an export directory or a .tflite file."""
    target = resolve(path)
    if target.kind == "run":
        model, info = rundir.load(path)
        return KerasPredictor(model, info.class_names, info.image_size)
    if target.kind == "tflite":
        return TFLitePredictor(target.path, target.class_names, target.image_size)
    if target.kind == "savedmodel":
        return SavedModelPredictor(target.path, target.class_names, int(target.image_size))
    if target.kind == "keras":
        from imgclass_cli.model.build import load_model

        return KerasPredictor(load_model(target.path), target.class_names, int(target.image_size))
    raise ImgclassError(f"{path}: unknown export format {target.kind!r}")
