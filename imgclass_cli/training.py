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
    config = _resume_config(config)
    out = config.out or rundir.default_out(config.command)
    config.out = out  # recorded, so that --resume finds the run's checkpoint and writes the same folder
    rundir.check_out(out, force)
    data = dataset.scan(config.data, val_split=config.val_split, seed=config.seed)
    from imgclass_cli import verify

    # Decode-check every file before fit (a prepared folder's manifest already did): never a decode error mid-epoch.
    data = verify.screen(data, config.on_bad_image, reporter.warn, min_classes=2)
    image_size = models.resolve_image_size(config.arch, config.image_size,
                                           native=models.typical_size([s.path for s in data.splits["train"]]))
    counts = {split: len(samples) for split, samples in data.splits.items()}
    reporter.info(
        f"{len(data.class_names)} classes, " + ", ".join(f"{n} {s}" for s, n in counts.items())
        + f" images; {config.arch} at {image_size}px"
    )

    keras().utils.set_random_seed(config.seed)
    # Same seed, data and options -> same metrics on CPU: without this, the random augmentation layers run in a
    # parallel tf.data map and consume their seed state in a racy order (observed: runs differed from epoch 1).
    tf().config.experimental.enable_op_determinism()
    strategy = tf().distribute.get_strategy()  # the default strategy; multi-device plugs in here
    steps = -(-len(data.splits["train"]) // config.batch_size)
    with strategy.scope():
        model = models.build_classifier(
            config.arch, len(data.class_names), image_size, weights=config.weights, dropout=config.dropout,
            trainable_backbone=False if config.command == "finetune" else None,
        )
    spec = pipeline.PipelineSpec(image_size, config.batch_size, config.seed, config.augment)
    train_ds = pipeline.build(data.splits["train"], spec, training=True)
    val_samples = data.splits.get("val", [])
    val_ds = pipeline.build(val_samples, spec, training=False) if val_samples else None
    warnings.filterwarnings("ignore", message=".*shuffle=True.*")  # our tf.data pipeline shuffles with the seed
    callbacks: list = list(callbacks or [])  # extra Keras callbacks for every phase (progress and checkpoints are added by fit_phases)
    try:
        history, val_pred = fit_phases(model, config, data, spec, train_ds, val_ds, reporter, callbacks, out, steps)
    except tf().errors.InvalidArgumentError as e:
        raise ImgclassError(f"an image could not be decoded during training: {e.message.splitlines()[0]}") from None
    if history and not np.isfinite(history[-1]["loss"]):
        raise ImgclassError("training diverged (loss is not finite); lower --learning-rate", exit_code=1)

    report = None
    if val_pred is not None:
        y, probs = val_pred
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
    from imgclass_cli import callbacks as ckpt

    ckpt.remove(ckpt.checkpoint_dir(out))  # the run is complete: its checkpoint is no longer needed
    return TrainResult(out, data.class_names, counts, image_size, history, report, time.time() - started)


# --- phases, feature cache, checkpoints (issue 4) -------------------------------------------------------------


def _resume_config(config: TrainConfig) -> TrainConfig:
    """With --resume: the interrupted run's own options (same data required), else a copy of config."""
    import dataclasses

    from imgclass_cli import callbacks as ckpt

    if not config.resume:
        return dataclasses.replace(config)
    folder = ckpt.find_checkpoint(config.resume)
    saved = TrainConfig.from_dict(ckpt.read_state(folder)["config"])
    if config.data and os.path.abspath(config.data) != os.path.abspath(saved.data):
        raise ImgclassError(f"--resume {config.resume}: that run trained on {saved.data}, not {config.data}")
    if saved.command != config.command:
        raise ImgclassError(f"--resume {config.resume}: that run is a `{saved.command}` run; resume it with `imgclass {saved.command}`")
    saved.resume = folder
    return saved


def class_weights(labels, num_classes: int) -> dict[int, float]:
    """'balanced' weights n / (k * count): scikit-learn's compute_class_weight."""
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(labels)
    present = np.unique(labels)
    w = compute_class_weight("balanced", classes=present, y=labels)
    weights = {int(c): float(v) for c, v in zip(present, w)}
    return {i: weights.get(i, 1.0) for i in range(num_classes)}


def make_optimizer(config: TrainConfig, learning_rate: float, steps_per_epoch: int, epochs: int):
    """Adam, or AdamW with --weight-decay; linear warm-up over --warmup-epochs, then cosine decay to 0."""
    K = keras()
    total = max(1, steps_per_epoch * epochs)
    warm = min(total - 1, int(round(config.warmup_epochs * steps_per_epoch)))
    # Cosine decay to zero: a calm last epoch, so the saved weights are not a lucky/unlucky step.
    if warm > 0:
        schedule = K.optimizers.schedules.CosineDecay(0.0, decay_steps=total - warm, warmup_target=learning_rate,
                                                      warmup_steps=warm)
    else:
        schedule = K.optimizers.schedules.CosineDecay(learning_rate, decay_steps=total)
    if config.weight_decay > 0:
        opt = K.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])  # decay kernels only
        return opt
    return K.optimizers.Adam(schedule)


def make_loss(config: TrainConfig, num_classes: int):
    from imgclass_cli.models import SmoothedSparseCrossentropy

    if config.label_smoothing > 0:
        return SmoothedSparseCrossentropy(num_classes, config.label_smoothing)
    return keras().losses.SparseCategoricalCrossentropy()


def fit_phases(model, config: TrainConfig, data, spec, train_ds, val_ds, reporter: Reporter, callbacks: list,
               out: str, steps: int):
    """Phase 1 (and phase 2 with --unfreeze), on the feature cache or the plain pipeline.

    Returns (history rows, (val labels, val probabilities) or None). Saves a checkpoint after every epoch;
    on Ctrl-C saves one and raises an ImgclassError with exit code 130 naming it.
    """
    import dataclasses

    from imgclass_cli import callbacks as ckpt
    from imgclass_cli import feature_cache, phases, pipeline
    from imgclass_cli.config import Augment, ClassWeight
    from imgclass_cli.errors import EXIT_INTERRUPTED
    from imgclass_cli.models import BACKBONE_LAYER as BACKBONE

    K = keras()
    num_classes = len(data.class_names)
    finetune = config.command == "finetune"
    folder = ckpt.checkpoint_dir(out)
    resume = ckpt.read_state(config.resume) if config.resume else None
    if resume:
        model.load_weights(os.path.join(config.resume, ckpt.WEIGHTS))
        reporter.info(f"resuming from {config.resume}: phase {resume['phase']}, {resume['epoch']} epoch(s) done")

    top_layers = []
    if finetune and (config.unfreeze or config.unfreeze_from) and config.finetune_epochs > 0:
        base = model.get_layer(BACKBONE)
        top_layers = phases.unfrozen_layers(base, config.unfreeze, config.unfreeze_from)
        phases.set_phase(model, 2, config.unfreeze, config.unfreeze_from)  # validates the choice early
        phases.set_phase(model, 1)
    plan = [(1, config.epochs, config.learning_rate)]
    if top_layers:
        plan.append((2, config.finetune_epochs, config.learning_rate * config.finetune_lr_scale))

    train_samples = data.splits["train"]
    val_samples = data.splits.get("val", [])
    fit_model, fit_train, fit_val, steps_per_epoch = model, train_ds, val_ds, None
    caches = []
    try:  # an interrupt while caching: drop an on-disk cache, nothing to resume yet
        if finetune and config.cache:
            trunk, top = feature_cache.split_backbone(model.get_layer(BACKBONE), top_layers) if top_layers else (None, None)
            fn = feature_cache.frozen_part(model, trunk)
            outputs = trunk.outputs if trunk is not None else [model.get_layer("pool").output]
            shapes = [tuple(int(d) for d in t.shape[1:]) for t in outputs]
            plain = dataclasses.replace(spec, augment=Augment.none)
            views = max(1, config.aug_views) if config.augment != Augment.none else 1

            def train_views(v):
                if config.augment == Augment.none:
                    return pipeline.build(train_samples, plain, training=False)
                return pipeline.build(train_samples, dataclasses.replace(spec, seed=spec.seed + v), training=True)

            disk = config.cache_dir or os.path.join(folder, "features")
            t0 = time.time()
            train_cache = feature_cache.build(fn, shapes, train_views, len(train_samples), views,
                                              disk_folder=os.path.join(disk, "train"), info=reporter.info)
            caches.append(train_cache)
            fit_train = feature_cache.dataset(train_cache, spec.batch_size, spec.seed, shuffle=True)
            if val_samples:
                val_cache = feature_cache.build(fn, shapes, lambda v: pipeline.build(val_samples, plain, training=False),
                                                len(val_samples), 1, disk_folder=os.path.join(disk, "val"))
                caches.append(val_cache)
                fit_val = feature_cache.dataset(val_cache, spec.batch_size, spec.seed, shuffle=False)
            reporter.info(f"feature cache ready in {time.time() - t0:.1f}s")
            fit_model = feature_cache.head_model(model, shapes, top)
            if views > 1:
                steps_per_epoch = steps
    except KeyboardInterrupt:
        for c in caches:
            c.close()
        raise

    history: list[dict] = list(resume["history"]) if resume else []
    start_phase, start_epoch = (resume["phase"], resume["epoch"]) if resume else (1, 0)
    auto = ClassWeight(config.class_weight) == ClassWeight.auto
    weights = class_weights([s.label for s in train_samples], num_classes) if auto else None
    if weights:
        reporter.info("class weights: " + ", ".join(f"{data.class_names[i]} {w:.2f}" for i, w in weights.items()))
    opt = None
    position = {"phase": start_phase, "epoch": start_epoch}

    def state():
        return {"config": config.to_dict(), "out": os.path.abspath(out), "history": history, **position}

    try:
        for phase, epochs, lr in plan:
            if phase < start_phase:
                continue
            initial = start_epoch if phase == start_phase else 0
            position.update(phase=phase, epoch=initial)
            if initial >= epochs:
                continue
            if finetune:
                trainable = phases.set_phase(model, phase, config.unfreeze, config.unfreeze_from)
                if top_layers:
                    what = "head on the frozen backbone" if phase == 1 else \
                        f"head + top {len(trainable)} backbone layers (BatchNorm frozen) at lr {lr:g}"
                    reporter.info(f"phase {phase}: {what}")
            opt = make_optimizer(config, lr, steps, epochs)
            fit_model.compile(optimizer=opt, loss=make_loss(config, num_classes),
                              metrics=[K.metrics.SparseCategoricalAccuracy(name="accuracy")])
            if resume and phase == start_phase and initial > 0:
                ckpt.restore_optimizer(config.resume, opt, fit_model.trainable_variables)
            offset = len(history) - initial

            def on_epoch(done, logs, phase=phase, offset=offset):
                history.append({"epoch": offset + done, "phase": phase, **{k: float(v) for k, v in logs.items()}})
                position.update(phase=phase, epoch=done)
                ckpt.save(folder, model, opt, state())

            cbs = [ckpt.checkpoint_callback(on_epoch), _keras_callback(reporter, epochs, steps), *callbacks]
            if config.patience > 0 and fit_val is not None:
                cbs.append(ckpt.early_stopping(config.patience))
            fit_model.fit(fit_train, validation_data=fit_val, epochs=epochs, initial_epoch=initial, verbose=0,
                          callbacks=cbs, class_weight=weights, steps_per_epoch=steps_per_epoch)
        val_pred = None
        if fit_val is not None:
            val_pred = predict_probs(fit_model, fit_val)
    except KeyboardInterrupt:
        ckpt.save(folder, model, opt, state())
        cmd = f"imgclass {config.command} {config.data} --resume {out}"
        raise ImgclassError(f"interrupted; checkpoint saved in {folder} (phase {position['phase']}, "
                            f"{position['epoch']} epoch(s) done); continue with: {cmd}", exit_code=EXIT_INTERRUPTED) from None
    finally:
        for c in caches:
            c.close()
    return history, val_pred

