"""Fit orchestration for train and finetune: scan -> pipeline -> model -> fit -> validate -> run directory."""

from __future__ import annotations

import os
import platform
import time
import warnings
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from imgclass_cli import __version__, dataset, rundir
from imgclass_cli._tf import keras, tf
from imgclass_cli.config import TrainConfig
from imgclass_cli.errors import ImgclassError
from imgclass_cli.metrics import Report, compute_report


class Reporter(Protocol):
    """Where progress goes (output.py implements it on stderr); the core never prints."""

    def info(self, message: str) -> None: ...
    def warn(self, message: str) -> None: ...
    def train_begin(self, epochs: int, steps: int) -> None: ...
    def batch_end(self, step: int, logs: dict) -> None: ...
    def epoch_end(self, epoch: int, logs: dict) -> None: ...
    def train_end(self) -> None: ...


@dataclass
class TrainResult:
    out: str
    class_names: list[str]
    counts: dict[str, int]
    image_size: int
    history: list[dict]
    report: Report | None
    seconds: float


def _keras_callback(reporter: Reporter, epochs: int, steps: int):
    class _Progress(keras().callbacks.Callback):
        def on_train_begin(self, logs=None):
            reporter.train_begin(epochs, steps)

        def on_train_batch_end(self, batch, logs=None):
            reporter.batch_end(batch + 1, dict(logs or {}))

        def on_epoch_end(self, epoch, logs=None):
            reporter.epoch_end(epoch + 1, dict(logs or {}))

        def on_train_end(self, logs=None):
            reporter.train_end()

    return _Progress()


def library_versions() -> dict:
    import sklearn

    return {
        "imgclass": __version__,
        "python": platform.python_version(),
        "tensorflow": tf().__version__,
        "keras": keras().__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }


def predict_probs(model, ds) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) over a finite labelled dataset, in dataset order."""
    ys, ps = [], []
    for x, y in ds:
        ps.append(model(x, training=False).numpy())
        ys.append(y.numpy())
    if not ys:
        return np.zeros(0, dtype=int), np.zeros((0, model.output_shape[-1]))
    return np.concatenate(ys), np.concatenate(ps)


def run(config: TrainConfig, reporter: Reporter, *, force: bool = False, callbacks: list | None = None) -> TrainResult:
    """callbacks: extra Keras callbacks for every fit (e.g. TensorBoard from `--tensorboard`)."""
    from imgclass_cli import models, pipeline, plots

    started = time.time()
    out = config.out or rundir.default_out(config.command)
    rundir.check_out(out, force)
    data = dataset.scan(config.data, val_split=config.val_split, seed=config.seed)
    from imgclass_cli import verify

    # Decode-check every file before fit (a prepared folder's manifest already did): never a decode error mid-epoch.
    data = verify.screen(data, config.on_bad_image, reporter.warn, min_classes=2)
    image_size = models.resolve_image_size(config.arch, config.image_size)
    counts = {split: len(samples) for split, samples in data.splits.items()}
    reporter.info(
        f"{len(data.class_names)} classes, " + ", ".join(f"{n} {s}" for s, n in counts.items())
        + f" images; {config.arch} at {image_size}px"
    )

    keras().utils.set_random_seed(config.seed)
    strategy = tf().distribute.get_strategy()  # the default strategy; multi-device plugs in here
    steps = -(-len(data.splits["train"]) // config.batch_size)
    with strategy.scope():
        model = models.build_classifier(
            config.arch, len(data.class_names), image_size, weights=config.weights, dropout=config.dropout,
            trainable_backbone=False if config.command == "finetune" else None,
        )
        model.compile(
            # Cosine decay to zero over the run: a calm last epoch, so the saved weights are not a lucky/unlucky step.
            optimizer=keras().optimizers.Adam(
                keras().optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=max(1, steps * config.epochs))
            ),
            loss=keras().losses.SparseCategoricalCrossentropy(),
            metrics=[keras().metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
    spec = pipeline.PipelineSpec(image_size, config.batch_size, config.seed, config.augment)
    train_ds = pipeline.build(data.splits["train"], spec, training=True)
    val_samples = data.splits.get("val", [])
    val_ds = pipeline.build(val_samples, spec, training=False) if val_samples else None
    warnings.filterwarnings("ignore", message=".*shuffle=True.*")  # our tf.data pipeline shuffles with the seed
    try:
        fit = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, verbose=0,
                        callbacks=[_keras_callback(reporter, config.epochs, steps), *(callbacks or [])])
    except tf().errors.InvalidArgumentError as e:
        raise ImgclassError(f"an image could not be decoded during training: {e.message.splitlines()[0]}") from None
    history = [
        {"epoch": i + 1, **{k: float(v[i]) for k, v in fit.history.items()}} for i in range(len(fit.history.get("loss", [])))
    ]
    if history and not np.isfinite(history[-1]["loss"]):
        raise ImgclassError("training diverged (loss is not finite); lower --learning-rate", exit_code=1)

    report = None
    if val_ds is not None:
        y, probs = predict_probs(model, val_ds)
        report = compute_report(y, probs, data.class_names, extra={"data": os.path.abspath(data.root), "split": "val"})

    root = os.path.abspath(data.root)
    split_rows = [
        {"path": os.path.relpath(os.path.abspath(s.path), root), "class": data.class_names[s.label], "split": split}
        for split, samples in data.splits.items()
        for s in samples
    ]
    run_config = {
        rundir.MARKER_KEY: __version__,
        "command": config.command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "options": config.to_dict(),
        "data": root,
        "image_size": image_size,
        "class_names": data.class_names,
        "split": {"counts": counts, "layout": data.layout, "file": rundir.SPLIT, "seed": config.seed},
        "preprocessing": {
            "input": "RGB, 0-255, any size (grayscale/RGBA converted to RGB, first GIF frame)",
            "resize": f"bilinear with antialiasing to {image_size}x{image_size}, inside the model",
            "normalization": "inside the model (Rescaling for scratch CNNs, the backbone's preprocess_input)",
        },
        "versions": library_versions(),
    }
    with rundir.staged(out, force) as tmp:
        rundir.save(tmp, model, data.class_names, run_config, history, report.to_dict() if report else None, split_rows)
        plots.save_training_curves(history, tmp, reporter.warn)
    return TrainResult(out, data.class_names, counts, image_size, history, report, time.time() - started)
