"""Fit orchestration for train and finetune: scan -> pipeline -> model -> fit -> validate -> run directory."""

from __future__ import annotations

import dataclasses
import os
import shlex
import time
import warnings
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from imgclass_cli import __version__, files, fs, interrupts, precision
from imgclass_cli._tf import keras, tf
from imgclass_cli.config import (
    Augment,
    MIN_CALIBRATION_IMAGES,
    TEMPERATURE_BOUNDS,
    ClassWeight,
    Resize,
    TrainConfig,
    auto_batch_size,
    auto_epochs,
    auto_learning_rate,
)
from imgclass_cli.data import dataset, pipeline, tfrecord, verify
from imgclass_cli.errors import EXIT_FAILED, ImgclassError
from imgclass_cli.model import build, feature_cache, phases
from imgclass_cli.model.parts import parts
from imgclass_cli.report import calibration, plots
from imgclass_cli.report.metrics import Report, collapse_message, compute_report
from imgclass_cli.run import checkpoints as ckpt
from imgclass_cli.run import distribute, preflight, rundir
from imgclass_cli.run.inference import predict_logits


class Reporter(Protocol):
    """Where progress goes (report.output implements it on stderr); the core never prints."""

    def info(self, message: str) -> None: ...
    def warn(self, message: str) -> None: ...
    def stage(self, description: str, total: int | None = None, unit: str = "images"): ...
    def train_begin(self, epochs: int, steps: int) -> None: ...
    def epoch_begin(self, epoch: int) -> None: ...
    def batch_end(self, step: int, logs: dict) -> None: ...
    def epoch_end(self, epoch: int, logs: dict) -> None: ...
    def train_end(self) -> None: ...
    def close(self) -> None: ...


@dataclass
class TrainResult:
    out: str
    class_names: list[str]
    counts: dict[str, int]
    image_size: int
    history: list[dict]
    report: Report | None
    seconds: float
    saved: bool = True  # False on a worker that is not the chief: `out` is the chief's run directory
    timings: dict = dataclasses.field(default_factory=dict)  # seconds per stage (timings.json in the run)


def _keras_callback(reporter: Reporter, epochs: int, steps: int):
    class _Progress(keras().callbacks.Callback):
        def on_train_begin(self, logs=None):
            reporter.train_begin(epochs, steps)

        def on_epoch_begin(self, epoch, logs=None):
            reporter.epoch_begin(epoch + 1)

        def on_train_batch_end(self, batch, logs=None):
            reporter.batch_end(batch + 1, dict(logs or {}))

        def on_epoch_end(self, epoch, logs=None):
            reporter.epoch_end(epoch + 1, dict(logs or {}))

        def on_train_end(self, logs=None):
            reporter.train_end()

    return _Progress()


def _validation_callback(model, val_ds, loss_fn):
    """Validation after every epoch with imgclass's traced forward pass (inference.predict_logits) instead of Keras
    fit's own: it puts val_loss and val_accuracy into the epoch's logs for the callbacks after it (put it first),
    and keeps the epoch's (labels, logits) as `last` (calibration fits its temperature on them). When the weights
    have not changed since the last epoch, `last` is the final validation, so the validation images are not run
    through the model a second time. A deferred SIGINT/SIGTERM is acted on between its batches, as between Keras'
    validation batches."""

    class _Validate(keras().callbacks.Callback):
        last = None

        def on_epoch_begin(self, epoch, logs=None):
            self.last = None

        def on_epoch_end(self, epoch, logs=None):
            labels, logits = predict_logits(model, val_ds, progress=lambda done: interrupts.check())
            if logs is not None:  # T is 1 while training: these are the model's probabilities
                logs.update(distribute.val_logs(loss_fn, labels, calibration.softmax(logits[0]).astype(np.float32)))
            self.last = (labels, logits[0])

    return _Validate()


class _Scanned(NamedTuple):
    """The scan run() makes before the strategy starts when the batch size is the default (it depends on the data)."""

    data: object
    image_size: int
    seconds: float


def run(config: TrainConfig, reporter: Reporter, *, force: bool = False, callbacks: list | None = None,
        tensorboard: bool = False) -> TrainResult:
    """callbacks: extra Keras callbacks for every fit. tensorboard: write TensorBoard logs beside OUT while training,
    moved into the run when it is saved.

    Options, paths and weights are checked first (no TensorFlow needed); then a lock on OUT is held for the whole
    run: a second run with the same OUT fails at once, naming the first."""
    config = preflight.check_train(config, force, reporter.warn)
    config = _resume_config(config)
    config.out = config.out or rundir.default_out(config.command)  # recorded in the run's config.json
    if not config.resume:
        ckpt.check_not_interrupted(config.out, force, _resume_command(config, config.out))
    callbacks = list(callbacks or [])
    logdir = None
    if tensorboard:
        logdir = plots.tensorboard_logdir(config.out)
        callbacks.append(plots.tensorboard_callback(logdir))
        reporter.info(f"TensorBoard logs in {logdir} (tensorboard --logdir {os.path.dirname(logdir)})")
    scanned, said = None, []  # said: the defaults picked for this data, printed after the image check (_run)
    if config.batch_size is None:  # the default depends on the number of training images (the strategy needs it)
        started = time.perf_counter()
        data, image_size = _scan(config)
        config.batch_size = auto_batch_size(len(data.splits.get("train", [])))
        scanned = _Scanned(data, image_size, time.perf_counter() - started)
    dist = distribute.start(config, auto_batch=scanned is not None)  # before TensorFlow builds anything
    choice = precision.resolve(config.precision)  # a precision this machine lacks fails here, before any work
    if scanned:
        said.append(_batch_sentence(config.batch_size, dist, len(scanned.data.splits.get("train", []))))
        config.batch_size = dist.global_batch
    if config.learning_rate is None:  # the default scales with the batch (recorded as a number)
        config.learning_rate, why = auto_learning_rate.explain(config.batch_size)
        said.append(f"learning rate {config.learning_rate:g} ({why})")
    dist.run_out = config.out
    if dist.kind != distribute.Strategy.default:
        reporter.info(dist.describe())
    result = _run_locked(config, reporter, force, callbacks, dist, scanned, said, choice)
    if logdir and result.saved:  # another worker's logdir is the chief's: leave it to the chief
        plots.move_tensorboard_logs(logdir, result.out)
    return result if dist.is_chief else dataclasses.replace(result, out=dist.run_out, saved=False)


def _batch_sentence(batch: int, dist: distribute.Distribution, train_images: int) -> str:
    _, why = auto_batch_size.explain(train_images)
    rounded = "" if dist.global_batch == batch else f"{batch} rounded up to a multiple of the {dist.replicas} replicas; "
    return f"batch size {dist.global_batch} ({rounded}{why})"


def _run_locked(config: TrainConfig, reporter: Reporter, force: bool, callbacks: list, dist, scanned, said,
                choice: precision.Choice):
    """_run under the lock of OUT. Only the chief writes OUT; another worker writes a temporary folder it removes
    (and runs no extra callbacks: TensorBoard logs are the chief's)."""
    with dist.outputs(config.out) as out:
        if out != config.out:
            config, callbacks = dataclasses.replace(config, out=out), []
        try:
            with fs.locked(out):
                try:
                    return _run(config, reporter, force, callbacks, dist, scanned, said, choice)
                except BaseException:  # failed or interrupted before any epoch was saved: no marker-only folder
                    ckpt.remove_unused(ckpt.checkpoint_dir(out))
                    raise
        except ImgclassError as e:
            if out == dist.run_out:
                raise
            # A worker's messages name its temporary folder; what to resume is the chief's run, beside OUT.
            here, there = os.path.dirname(out), os.path.dirname(os.path.abspath(dist.run_out))
            raise ImgclassError(e.message.replace(here, there), e.exit_code) from None


def _run(config: TrainConfig, reporter: Reporter, force: bool, callbacks: list, dist: distribute.Distribution,
         scanned: _Scanned | None = None, said: list[str] | None = None,
         choice: precision.Choice | None = None) -> TrainResult:
    """scanned: run()'s scan when it scanned already (to pick the default batch size). said: the defaults run()
    picked (batch size, learning rate), one line after the image check and the precision's line, so a bad file's
    error stays the only line. choice: the precision (float32 when not given)."""
    choice = choice or precision.choose("float32", precision.Machine())
    started = time.time() - (scanned.seconds if scanned else 0.0)
    timings = Timings()
    out = config.out
    _check_outputs(config, force)
    if scanned:
        data, image_size, timings.seconds["scan"] = scanned.data, scanned.image_size, scanned.seconds
    else:
        with timings("scan"):
            data, image_size = _scan(config)
    try:
        model, data = _model_and_checked_data(config, data, image_size, reporter, dist, timings, said or [],
                                              choice)
    except KeyboardInterrupt as e:
        raise _interrupted(e, config, out, None) from None
    counts = {split: len(samples) for split, samples in data.splits.items()}
    history, val_pred, shown = _fit(model, config, data, image_size, reporter, callbacks, dist, timings, choice)
    report, calibration = _calibrated_report(model, config, data, val_pred, reporter)
    try:
        build.apply_precision(model, precision.FLOAT32)  # saved as float32: it predicts on any machine
        recorded = _save_run(out, force, config, data, image_size, model, history, report, reporter, dist,
                             timings, started, choice, shown, calibration)
    except KeyboardInterrupt as e:  # the staged run folder is gone; the last epoch's checkpoint is still there
        raise _interrupted(e, config, out, None) from None
    ckpt.remove(ckpt.checkpoint_dir(out))  # the run is complete: its checkpoint is no longer needed
    return TrainResult(out, data.class_names, counts, image_size, history, report, time.time() - started,
                       timings=recorded)


def _calibrated_report(model, config: TrainConfig, data, val_pred, reporter: Reporter) -> tuple[Report | None, dict]:
    """Temperature scaling on the final validation pass's logits (set in the model before it is saved, so every
    later command and export gives calibrated probabilities), then the validation metrics at that temperature.
    Returns (report or None, config.json's calibration record)."""
    if val_pred is None:
        reporter.info("calibration: no validation split; the temperature stays 1")
        return None, {"temperature": 1.0, "fitted_on": None, "images": 0, "reason": "no validation split"}
    y, logits = val_pred
    record = _calibrate(model, config, y, logits, reporter)
    t = record["temperature"]
    n = len(y)
    extra = {"data": tfrecord.absolute(data.root), "split": "val",
             "seen_by_run": {"train": 0, "val": n, "of": n, "fraction": 1.0 if n else 0.0, "checked": True},
             "tta": None}
    report = compute_report(y, calibration.softmax(logits, t), data.class_names, extra=extra,
                            probs_uncalibrated=calibration.softmax(logits), temperature=t)
    collapsed = collapse_message(report.prediction_collapse, n)
    if collapsed:
        reporter.warn(f"validation: {collapsed}")
    return report, record


def _calibrate(model, config: TrainConfig, y, logits, reporter: Reporter) -> dict:
    """Fit T on the validation logits (report.calibration.fit_temperature) and set it in the model's
    TemperatureSoftmax; T stays 1 with --no-calibrate, below MIN_CALIBRATION_IMAGES, or when the fit has no
    minimum inside TEMPERATURE_BOUNDS (a validation split without mistakes)."""
    n = len(y)
    if not config.calibrate:
        return {"temperature": 1.0, "fitted_on": None, "images": n, "reason": "--no-calibrate"}
    if n < MIN_CALIBRATION_IMAGES:
        reporter.info(f"calibration: {n} validation images, fewer than the {MIN_CALIBRATION_IMAGES} a temperature "
                      "needs; the temperature stays 1")
        return {"temperature": 1.0, "fitted_on": None, "images": n,
                "reason": f"fewer than {MIN_CALIBRATION_IMAGES} validation images"}
    fit = calibration.fit_temperature(logits, y, TEMPERATURE_BOUNDS)
    if fit.at_bound:
        why = ("the model makes no mistake on the validation split: nothing to calibrate against" if not fit.mistakes
               else f"the validation NLL has no minimum between temperatures {TEMPERATURE_BOUNDS[0]:g} and "
               f"{TEMPERATURE_BOUNDS[1]:g}")
        reporter.info(f"calibration: {why}; the temperature stays 1")
        return {"temperature": 1.0, "fitted_on": None, "images": n, "nll_before": fit.nll_before,
                "reason": "no mistakes on the validation split" if not fit.mistakes else "no minimum inside the bounds"}
    parts(model).set_temperature(fit.temperature)
    reporter.info(f"calibration: temperature {fit.temperature:.3f} fitted on {n} validation images (NLL "
                  f"{fit.nll_before:.4f} -> {fit.nll_after:.4f})")
    return {"temperature": fit.temperature, "fitted_on": "val", "images": n, "nll_before": fit.nll_before,
            "nll_after": fit.nll_after}


def _model_and_checked_data(config: TrainConfig, data, image_size: int, reporter: Reporter, dist, timings, said,
                            choice: precision.Choice):
    """The model (computing in the chosen precision), then the image check (after the model: an offline ImageNet
    download fails before minutes of checking), then the defaults that depend on the checked data."""
    keras().utils.set_random_seed(config.seed)
    # Same seed, data and options -> same metrics on CPU: without this, the random augmentation layers run in a
    # parallel tf.data map and consume their seed state in a racy order.
    tf().config.experimental.enable_op_determinism()
    with dist.strategy.scope(), timings("model"):
        model = build.build_classifier(
            config.arch, len(data.class_names), image_size, weights=config.weights, dropout=config.dropout,
            trainable_backbone=False if config.command == "finetune" else None, resize=config.resize,
        )
        build.apply_precision(model, choice.policy)
    with timings("check"):
        data = _check_images(config, data, image_size, reporter, dist)
    reporter.info(choice.line())
    if said:
        reporter.info("; ".join(said))
    if config.epochs is None:  # recorded as a number in the checkpoint and config.json
        train_images = len(data.splits.get("train", []))
        config.epochs, why = auto_epochs.explain(train_images)
        reporter.info(f"{config.epochs} epochs ({why})")
    return model, data


def _fit(model, config: TrainConfig, data, image_size: int, reporter: Reporter, callbacks: list, dist, timings,
         choice: precision.Choice):
    """fit_phases, with TensorFlow's failures turned into one clear error: a file that fails to decode mid-epoch,
    a lost peer, an interrupt outside the fit loop's safe points, a diverged loss. Returns (history, validation
    predictions, the augmented images shown in augment_preview.png or None)."""
    cached = config.command == "finetune" and config.cache  # one label per cached image: no MixUp/CutMix
    spec = pipeline.PipelineSpec(image_size, config.batch_size, config.seed, config.augment, config.resize,
                                 0 if cached else len(data.class_names))
    shown = None
    if config.augment != Augment.none:
        reporter.info(f"augmentation: {pipeline.describe_augmentation(config.augment, mixing=not cached)}")
        same = data.image_size == image_size and data.image_resize == spec.resize.value
        kept = data.images.get("train") if same else None
        shown = pipeline.preview(data.splits["train"], spec, kept)
    warnings.filterwarnings("ignore", message=".*shuffle=True.*")  # our tf.data pipeline shuffles with the seed
    try:
        with dist.strategy.scope():
            history, val_pred = fit_phases(model, config, data, spec, reporter, list(callbacks), config.out, dist,
                                           timings, choice)
    except (tf().errors.InvalidArgumentError, tf().errors.DataLossError) as e:
        samples = [s for split in data.splits.values() for s in split]
        raise ImgclassError("an image could not be decoded during training: "
                            f"{pipeline.read_error_message(e, samples)}") from None
    except KeyboardInterrupt as e:  # outside the fit loop's safe points (feature cache, last validation pass)
        raise _interrupted(e, config, config.out, None) from None
    except tf().errors.OpError as e:
        if not distribute.peer_lost(e, dist):
            raise
        reporter.close()
        raise _with_resume_hint(ImgclassError(distribute.peer_lost_message(e), EXIT_FAILED), config, dist.run_out,
                                every_worker=True) from None
    if history and not np.isfinite(history[-1]["loss"]):
        raise ImgclassError("training diverged (loss is not finite); lower --learning-rate", exit_code=1)
    return history, val_pred, shown


class Timings:
    """Seconds per stage of a run (scan, model, check, feature cache, each epoch, final validation, save), kept in
    the run as timings.json and printed at the end; `with timings("stage"):` adds the block's time to a stage."""

    STAGES = ("scan", "model", "check", "feature_cache", "epochs", "final_validation", "save")

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.epochs: list[float] = []

    def __call__(self, stage: str):
        import contextlib

        @contextlib.contextmanager
        def timed():
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0

        return timed()

    def epoch_callback(self):
        epochs = self.epochs

        class _EpochTimer(keras().callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                epochs.append(round(time.perf_counter() - self.t0, 3))

        return _EpochTimer()

    def to_dict(self, total: float) -> dict:
        """Every stage (0 when it did not run); `epochs` lists each epoch (its validation and checkpoint included);
        `other` is the rest of `total` (TensorFlow setup, compiling, the run's lock and clean-up)."""
        d: dict = {k: list(self.epochs) if k == "epochs" else round(self.seconds.get(k, 0.0), 3) for k in self.STAGES}
        d["total"] = round(total, 3)
        d["other"] = round(max(0.0, total - sum(self.seconds.values()) - sum(self.epochs)), 3)
        return d


def _check_outputs(config: TrainConfig, force: bool) -> None:
    """Before the first image is decoded: OUT may be written, its checkpoint folder (if any) is ours, and the
    --cache-dir folder is writable."""
    rundir.check_out(config.out, force)
    folder = ckpt.checkpoint_dir(config.out)
    if os.path.lexists(folder) and not fs.is_owned(folder, fs.CHECKPOINT):
        raise ImgclassError(f"{folder}: exists and is not an imgclass checkpoint holding only checkpoint files; "
                            "move it away or choose another --out")
    if config.command == "finetune" and config.cache and config.cache_dir:
        fs.check_writable(config.cache_dir)


def _scan(config: TrainConfig):
    """Scan the data (no decoding), leaving out the --exclude list's images, and resolve the image size from the
    images' headers."""
    from imgclass_cli.data import exclude

    listed = exclude.read(config.exclude, config.data) if config.exclude else None
    data = dataset.scan(config.data, val_split=config.val_split, seed=config.seed, exclude=listed)
    train = data.splits["train"]
    # Records: the stored images' sizes come from the manifest (a TFRecord folder has no files to open).
    native = (build.typical_size(train, longer_side=dataset.longer_side) if train and train[0].record is not None
              else build.typical_size([s.path for s in train]))
    image_size = build.resolve_image_size(config.arch, config.image_size, native=native)
    return data, image_size


def _check_images(config: TrainConfig, data, image_size: int, reporter: Reporter, dist: distribute.Distribution):
    """Decode-check every file before fit (a prepared folder's manifest already did): never a decode error
    mid-epoch. Under multiworker each worker checks only its own shard."""
    _say_excluded(data, reporter)
    tf()  # imported before the stage's clock starts: its time and rate are the check's own
    # Decoded at the training size: the same pass fills the in-memory image cache, so epoch 1 decodes nothing.
    with reporter.stage("checking images", unit="images") as progress:
        # Under multiworker the kept images are of this worker's shard only; screened() drops them (it streams).
        local = verify.screen(dist.local(data), config.on_bad_image, reporter.warn, min_classes=2, progress=progress,
                              image_size=image_size, resize=config.resize)
    data = dist.screened(data, local)
    counts = {split: len(samples) for split, samples in data.splits.items()}
    reporter.info(
        f"{len(data.class_names)} classes, " + ", ".join(f"{n} {s}" for s, n in counts.items())
        + f" images; {config.arch} at {image_size}px"
    )
    return data


def _say_excluded(data, reporter: Reporter) -> None:
    """How many images --exclude left out, and a warning naming listed paths that are not images of the data."""
    from imgclass_cli.data import exclude

    if data.exclusion is None:
        return
    reporter.info(f"left out {len(data.excluded)} image(s) listed in {data.exclusion.source} (--exclude)")
    unknown = exclude.unknown_message(data.exclusion, data.excluded)
    if unknown:
        reporter.warn(unknown)


def _save_run(out: str, force: bool, config: TrainConfig, data, image_size: int, model, history: list[dict],
              report: Report | None, reporter: Reporter, dist: distribute.Distribution, timings: Timings,
              started: float, choice: precision.Choice, shown=None, calibration_record: dict | None = None) -> dict:
    """Writes the run (with augment_preview.png when `shown` holds augmented images); returns the timings it
    recorded (what train and finetune print)."""
    root = tfrecord.absolute(data.root)
    split_rows = [
        {"path": _relative(s.path, root), "class": data.class_names[s.label], "split": split}
        for split, samples in data.splits.items()
        for s in samples
    ]
    counts = {split: len(samples) for split, samples in data.splits.items()}
    run_config = {
        rundir.VERSION_KEY: __version__,
        "command": config.command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "options": config.options(),
        "data": root,
        "image_size": image_size,
        "class_names": data.class_names,
        "split": {"counts": counts, "layout": data.layout, "file": files.SPLIT, "seed": config.seed},
        "preprocessing": {
            "input": "RGB, 0-255, any size (grayscale/RGBA converted to RGB, first GIF frame)",
            "resize": f"{RESIZE_WORDS[config.resize]}, bilinear with antialiasing to {image_size}x{image_size}, "
                      "inside the model",
            "resize_mode": config.resize.value,
            "normalization": "inside the model (Rescaling for scratch CNNs, the backbone's preprocess_input)",
        },
        "distribute": dist.record(),
        "calibration": calibration_record or {"temperature": 1.0, "fitted_on": None},
        "precision": choice.record(),  # what training computed in; the saved model is float32
        "versions": rundir.library_versions(),
    }
    with fs.staged(out, force, fs.RUN) as tmp:
        with timings("save"):
            rundir.save(tmp, model, data.class_names, run_config, history, report.to_dict() if report else None,
                        split_rows)
            plots.save_training_curves(history, tmp, reporter.warn)
            if shown is not None:
                plots.save_augment_preview(shown, tmp, pipeline.describe_augmentation(
                    config.augment, mixing=not (config.command == "finetune" and config.cache)), reporter.warn)
        recorded = timings.to_dict(time.time() - started)
        rundir.save_timings(tmp, recorded)  # last: `save` covers the rest
    return recorded


RESIZE_WORDS = {Resize.squash: "the whole image squashed to a square", Resize.crop: "the centred square cropped",
                Resize.pad: "the whole image padded to a square with black"}


def _relative(path: str, root: str) -> str:
    if tfrecord.is_url(root):  # a URL: no os.path.abspath (it would turn gs://b into CWD/gs:/b)
        return path[len(root):].lstrip("/") if path.startswith(root) else path
    return os.path.relpath(os.path.abspath(path), root)


# --- phases, feature cache, checkpoints ------------------------------------------------------------------------


def _resume_config(config: TrainConfig) -> TrainConfig:
    """With --resume: the interrupted run's own options (same data required), else a copy of config."""
    if not config.resume:
        return dataclasses.replace(config)
    folder, out = ckpt.find_checkpoint(config.resume)
    saved = ckpt.read_state(folder)["config"]
    if config.data and tfrecord.absolute(config.data) != tfrecord.absolute(saved.data):
        raise ImgclassError(f"--resume {config.resume}: that run trained on {saved.data}, not {config.data}")
    if saved.command != config.command:
        raise ImgclassError(f"--resume {config.resume}: that run is a `{saved.command}` run; resume it with `imgclass {saved.command}`")
    if config.out and os.path.abspath(config.out) != out:
        raise ImgclassError(f"--resume {config.resume}: that checkpoint belongs to the run {out}; drop --out")
    # Where to write and what to delete never come from the checkpoint: the run is the folder the checkpoint
    # belongs to, and the cache goes where this command line says.
    saved.out, saved.cache_dir, saved.resume = out, config.cache_dir, folder
    saved.strategy = config.strategy  # how to spread the rest over devices is this command line's choice
    return saved


def class_weights(labels, num_classes: int) -> dict[int, float]:
    """'balanced' weights n / (k * count(class)), as scikit-learn's compute_class_weight defines them."""
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(labels)
    present = np.unique(labels)
    w = compute_class_weight("balanced", classes=present, y=labels)
    weights = {int(c): float(v) for c, v in zip(present, w)}
    return {i: weights.get(i, 1.0) for i in range(num_classes)}


def make_optimizer(config: TrainConfig, learning_rate: float, steps_per_epoch: int, epochs: int,
                   loss_scaling: bool = False):
    """Adam, or AdamW with --weight-decay; linear warm-up over --warmup-epochs, then cosine decay to 0. With
    loss_scaling (float16), wrapped in Keras' LossScaleOptimizer (dynamic loss scaling)."""
    opt = _optimizer(config, learning_rate, steps_per_epoch, epochs)
    return keras().optimizers.LossScaleOptimizer(opt) if loss_scaling else opt


def _optimizer(config: TrainConfig, learning_rate: float, steps_per_epoch: int, epochs: int):
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


def make_loss(config: TrainConfig, num_classes: int, reduction: str | None = "sum_over_batch_size",
              mixed_labels: bool = False):
    """Cross-entropy on class indices; with mixed_labels it also takes mixed one-hot labels (MixUp, CutMix)."""
    if config.label_smoothing > 0 or mixed_labels:
        return build.SmoothedSparseCrossentropy(num_classes, config.label_smoothing, reduction=reduction)
    return keras().losses.SparseCategoricalCrossentropy(reduction=reduction)


@dataclass
class Phase:
    number: int  # 1: head on the frozen backbone (or the whole scratch network); 2: head + top of the backbone
    epochs: int
    learning_rate: float


@dataclass
class FitData:
    """What fit() trains: the full model on the image pipeline, or the trainable part on the feature cache."""

    model: object
    train: object
    val: object | None
    steps_per_epoch: int | None  # set when the cached dataset repeats (several augmented views)
    caches: list
    mixed_labels: bool = False  # training labels are mixed one-hot vectors (MixUp, CutMix)
    loss_scaling: bool = False  # float16: Keras' loss scaling wraps the optimizer


def plan_phases(model, config: TrainConfig) -> tuple[list[Phase], list]:
    """The phases to run and the backbone layers phase 2 unfreezes (validated before any work)."""
    top_layers = []
    finetune = config.command == "finetune"
    if finetune and (config.unfreeze or config.unfreeze_from) and config.finetune_epochs > 0:
        top_layers = phases.unfrozen_layers(parts(model).backbone, config.unfreeze,
                                            config.unfreeze_from)
        phases.set_phase(model, 2, config.unfreeze, config.unfreeze_from)  # validates the choice early
        phases.set_phase(model, 1)
    plan = [Phase(1, config.epochs, config.learning_rate)]
    if top_layers:
        plan.append(Phase(2, config.finetune_epochs, config.learning_rate * config.finetune_lr_scale))
    return plan, top_layers


def prepare_fit_data(model, config: TrainConfig, data, spec, top_layers: list, folder: str, reporter: Reporter) -> FitData:
    """The plain image pipelines, or (finetune with --cache) the frozen part run once into a feature cache."""
    train_samples = data.splits["train"]
    val_samples = data.splits.get("val", [])
    same = data.image_size == spec.image_size and data.image_resize == spec.resize.value
    kept = data.images if same else {}  # decoded by the check (verify.screen)
    train_ds = pipeline.build(train_samples, spec, training=True, images=kept.get("train"))
    val_ds = pipeline.build(val_samples, spec, training=False, images=kept.get("val")) if val_samples else None
    if not (config.command == "finetune" and config.cache):
        data.images = {}  # the datasets hold the pixels now: at the 2 GB cache limit, not twice
        return FitData(model, train_ds, val_ds, None, [], mixed_labels=pipeline.mixes_labels(spec))
    base = parts(model).backbone
    trunk, top = feature_cache.split_backbone(base, top_layers) if top_layers else (None, None)
    fn = feature_cache.frozen_part(model, trunk)
    outputs = trunk.outputs if trunk is not None else [parts(model).pool.output]
    shapes = [tuple(int(d) for d in t.shape[1:]) for t in outputs]
    plain = dataclasses.replace(spec, augment=Augment.none)
    views = max(1, config.aug_views) if config.augment != Augment.none else 1

    def train_views(v):
        if config.augment == Augment.none:
            return pipeline.build(train_samples, plain, training=False, images=kept.get("train"))
        return pipeline.build(train_samples, dataclasses.replace(spec, seed=spec.seed + v), training=True,
                              images=kept.get("train"))

    # An on-disk cache goes into a new folder of its own inside --cache-dir (default: beside --out).
    disk = config.cache_dir or os.path.dirname(os.path.abspath(config.out or folder))
    fit = FitData(feature_cache.head_model(model, shapes, top), None, None, None, [])
    t0 = time.time()
    try:  # an interrupt while caching: drop an on-disk cache, nothing to resume yet
        with reporter.stage("feature cache (train)") as progress:
            train_cache = feature_cache.build(fn, shapes, train_views, len(train_samples), views,
                                              disk_parent=disk, info=reporter.info, progress=progress)
        fit.caches.append(train_cache)
        fit.train = feature_cache.dataset(train_cache, spec.batch_size, spec.seed, shuffle=True)
        if val_samples:
            with reporter.stage("feature cache (val)") as progress:
                val_cache = feature_cache.build(fn, shapes,
                                                lambda v: pipeline.build(val_samples, plain, training=False,
                                                                         images=kept.get("val")),
                                                len(val_samples), 1, disk_parent=disk, progress=progress)
            fit.caches.append(val_cache)
            fit.val = feature_cache.dataset(val_cache, spec.batch_size, spec.seed, shuffle=False)
    except KeyboardInterrupt:
        close_caches(fit)
        raise
    data.images = {}  # every pass that needed the pixels is done
    reporter.info(f"feature cache ready in {time.time() - t0:.1f}s")
    if views > 1:
        fit.steps_per_epoch = -(-len(train_samples) // spec.batch_size)
    return fit


def close_caches(fit: FitData) -> None:
    for c in fit.caches:
        c.close()


def fit_phases(model, config: TrainConfig, data, spec, reporter: Reporter, callbacks: list, out: str,
               dist: distribute.Distribution | None = None, timings: Timings | None = None,
               choice: precision.Choice | None = None):
    """Phase 1 (and phase 2 with --unfreeze), on the feature cache or the plain pipeline.

    Returns (history rows, (val labels, val logits) or None). Saves a checkpoint after every epoch;
    on Ctrl-C saves one and raises an ImgclassError with exit code 130 naming it.
    """
    folder = fs.make_owned_dir(ckpt.checkpoint_dir(out), fs.CHECKPOINT)
    resume = ckpt.read_state(config.resume) if config.resume else None
    if resume:
        ckpt.load_weights(config.resume, model)
        reporter.info(f"resuming from {config.resume}: phase {resume['phase']}, {resume['epoch']} epoch(s) done")
    plan, top_layers = plan_phases(model, config)
    timings = timings or Timings()
    with timings("feature_cache" if config.command == "finetune" and config.cache else "model"):
        if dist is not None and dist.custom_loop:  # this worker's files only, at the per-replica batch
            fit = prepare_fit_data(model, config, dist.shard(data),
                                   dataclasses.replace(spec, batch_size=dist.per_replica_batch), top_layers, folder,
                                   reporter)
        else:
            fit = prepare_fit_data(model, config, data, spec, top_layers, folder, reporter)
    fit.loss_scaling = choice is not None and choice.loss_scaling
    try:
        # SIGINT/SIGTERM only set a flag in here; the loop acts on it between batches (ckpt.safe_points), never
        # inside a checkpoint write.
        with interrupts.deferred():
            return _fit_loop(model, fit, plan, bool(top_layers), config, data, reporter, callbacks, out, resume,
                             dist, timings)
    finally:
        close_caches(fit)


def _phase2_text(model, config: TrainConfig, trainable: list, learning_rate: float) -> str:
    """What --unfreeze N does, counted as the user counted: N layers from the top, some of which do not train."""
    top = phases.unfrozen_layers(parts(model).backbone, config.unfreeze, config.unfreeze_from)
    bn = sum(1 for layer in top if phases.is_batchnorm(layer))
    rest = len(top) - len(trainable) - bn
    return (f"head + the top {len(top)} backbone layers at lr {learning_rate:g}: {len(trainable)} train, "
            f"{bn} BatchNorm stay frozen, {rest} have no weights")


@dataclass
class _Loop:
    """What the fit loop carries from epoch to epoch and saves in every checkpoint: the history rows, the phase and
    the epochs done in it, and the optimizer of the phase running."""

    config: TrainConfig
    out: str
    history: list[dict]
    phase: int
    epoch: int
    optimizer: object = None
    rng: list = dataclasses.field(default_factory=list)  # the generators training draws from (ckpt.rng_variables)
    data: object = None  # the training dataset Keras fit iterates (_counted)

    def state(self) -> dict:
        return {"config": self.config.to_dict(), "out": os.path.abspath(self.out), "history": self.history,
                "phase": self.phase, "epoch": self.epoch, "data_iterations": getattr(self.data, "iterations", 0)}

    def save(self, model) -> None:
        ckpt.save(ckpt.checkpoint_dir(self.out), model, self.optimizer, self.state(), self.rng)


def _fit_loop(model, fit: FitData, plan: list[Phase], two_phases: bool, config: TrainConfig, data,
              reporter: Reporter, callbacks: list, out: str, resume: dict | None,
              dist: distribute.Distribution | None, timings: Timings):
    """Every phase's fit, with a checkpoint after each epoch; --resume continues where the checkpoint stands.
    Returns (history, validation predictions)."""
    loop = _Loop(config, out, list(resume["history"]) if resume else [], *((resume["phase"], resume["epoch"])
                                                                         if resume else (1, 0)))
    loop.rng = ckpt.rng_variables(model, pipeline.random_layers(fit.train))
    start_phase, start_epoch = loop.phase, loop.epoch
    num_classes = len(data.class_names)
    weights = class_weights([s.label for s in data.splits["train"]], num_classes) \
        if ClassWeight(config.class_weight) == ClassWeight.auto else None
    if weights:
        reporter.info("class weights: " + ", ".join(f"{data.class_names[i]} {w:.2f}" for i, w in weights.items()))
    custom = dist is not None and dist.custom_loop
    val = None  # the validation of the custom loop (mirrored, multiworker), spread over the replicas
    if custom and data.splits.get("val"):
        labels = np.array([s.label for s in data.splits["val"]])
        val = distribute.Validation(fit.val, labels, dist.positions("val", len(labels)))
    last_validation = None  # (labels, logits) of the last epoch run, at the weights fit ended with
    if not custom:  # Keras fit iterates this very dataset: its iterators are counted (see _continue_randomness)
        fit.train = _counted(_with_class_weights(fit.train, weights))
        loop.data = fit.train
    if resume:
        _continue_randomness(fit, loop, resume, config.resume)
    try:
        for phase in plan:
            initial = start_epoch if phase.number == start_phase else 0
            if phase.number < start_phase or initial >= phase.epochs:
                continue
            restore = resume is not None and phase.number == start_phase and initial > 0
            last_validation = _fit_phase(model, fit, phase, initial, restore, two_phases, loop, data, reporter,
                                         callbacks, weights, val, dist, timings)
            interrupts.check()
        with timings("final_validation"):  # (labels, logits): calibration fits its temperature on them
            if val is not None:  # the custom loop's validation gives probabilities: their log (logits + a constant)
                probs = distribute.validate(dist, fit.model, val, num_classes)
                result = loop.history, (val.labels, np.log(np.maximum(probs.astype(np.float64), 1e-30)))
            elif last_validation is not None and config.patience == 0:  # early stopping may restore other weights
                result = loop.history, last_validation
            elif fit.val is not None and not custom:
                labels, logits = predict_logits(fit.model, fit.val)
                result = loop.history, (labels, logits[0])
            else:
                result = loop.history, None
        interrupts.check()
        return result
    except KeyboardInterrupt as e:
        # Rolled back to the last completed epoch: the checkpoint of its end stays as it is (its weights, optimizer
        # and generators), and the interrupted epoch's batches run again, once, on --resume. Saving the weights of
        # the middle of an epoch under "epoch N done" made a resumed run train those batches twice.
        reporter.close()  # Ctrl-C's message goes on its own line, not on the bar's
        raise _interrupted(e, config, out, None) from None


def _continue_randomness(fit: FitData, loop: _Loop, resume: dict, folder: str) -> None:
    """A resumed run draws what the uninterrupted run would have drawn: the generators as the checkpoint saved them,
    and the training data's shuffle where it stood. tf.data draws a new order each time an iterator is made over the
    dataset (Keras fit makes two an epoch when the dataset's length is known: at its start and, unused, at its
    end), so making and dropping as many as the interrupted run had made advances it without reading a batch.
    A dataset that repeats (finetune's cache of several views, fit with steps_per_epoch) keeps one iterator across
    epochs: the batches already consumed are skipped instead (the same data; the order of the repeats may differ)."""
    ckpt.restore_rng(folder, resume["rng"], loop.rng)
    if fit.steps_per_epoch is not None:
        if resume["history"] and loop.data is not None:
            fit.train = loop.data = _counted(fit.train.skip(len(resume["history"]) * fit.steps_per_epoch))
        return
    for _ in range(resume["data_iterations"] if loop.data is not None else 0):
        iter(fit.train)


def _counted(ds):
    """`ds`, counting in ds.iterations the iterators made over it (each draws a shuffle order; a checkpoint saves
    how many were drawn)."""
    base = type(ds)

    class Counted(base):
        def __iter__(self):
            self.iterations += 1
            return base.__iter__(self)

    ds.__class__ = Counted
    ds.iterations = 0
    return ds


def _with_class_weights(ds, weights: dict | None):
    """(x, y) -> (x, y, weight of y): the sample weights Keras' class_weight would add, added here so that fit
    iterates this dataset itself (Keras wraps a dataset in a map of its own for class_weight)."""
    if not weights:
        return ds
    t = tf()
    table = t.constant([weights[i] for i in range(len(weights))], t.float32)
    return ds.map(lambda x, y: (x, y, t.gather(table, y)))


def _fit_phase(model, fit: FitData, phase: Phase, initial: int, restore: bool, two_phases: bool, loop: _Loop, data,
               reporter: Reporter, callbacks: list, weights, val, dist, timings: Timings):
    """One phase's fit from epoch `initial`: compile (and with `restore` the checkpoint's optimizer state), the
    callbacks in their order, Keras fit or the custom loop. Returns the last epoch's validation (labels, probs)."""
    K = keras()
    config = loop.config
    num_classes = len(data.class_names)
    steps = -(-len(data.splits["train"]) // config.batch_size)
    loop.phase, loop.epoch = phase.number, initial
    if config.command == "finetune":
        trainable = phases.set_phase(model, phase.number, config.unfreeze, config.unfreeze_from)
        if two_phases:
            what = "head on the frozen backbone" if phase.number == 1 else _phase2_text(
                model, config, trainable, phase.learning_rate)
            reporter.info(f"phase {phase.number}: {what}")
    loop.optimizer = opt = make_optimizer(config, phase.learning_rate, steps, phase.epochs, fit.loss_scaling)
    accuracy = K.metrics.CategoricalAccuracy if fit.mixed_labels else K.metrics.SparseCategoricalAccuracy
    fit.model.compile(optimizer=opt, loss=make_loss(config, num_classes, mixed_labels=fit.mixed_labels),
                      metrics=[accuracy(name="accuracy")])
    if restore:
        ckpt.restore_optimizer(config.resume, opt, fit.model.trainable_variables)
    offset = len(loop.history) - initial

    def on_epoch(done, logs):
        loop.history.append({"epoch": offset + done, "phase": phase.number, **{k: float(v) for k, v in logs.items()}})
        loop.epoch = done
        try:
            loop.save(model)
        except fs.WriteFailed as e:  # e.g. a full disk: the previous checkpoint is still whole
            raise _with_resume_hint(e, config, loop.out) from None

    custom = dist is not None and dist.custom_loop
    validate = None if custom or fit.val is None else _validation_callback(
        fit.model, fit.val, make_loss(config, num_classes, None))
    cbs = [ckpt.checkpoint_callback(on_epoch), _keras_callback(reporter, phase.epochs, steps), *callbacks]
    if validate is not None:
        cbs.insert(0, validate)  # first: the others read its val_loss and val_accuracy
    if config.patience > 0 and fit.val is not None:
        cbs.append(ckpt.early_stopping(config.patience))
    cbs.append(timings.epoch_callback())  # after the checkpoint: an epoch's time includes its save
    cbs.append(ckpt.safe_points())  # last: the epoch's checkpoint and progress line come first
    try:
        if custom:  # mirrored, multiworker: Keras fit fails under both (see run/distribute.py)
            distribute.fit_loop(dist, fit.model, fit.train, val,
                                loss_fn=make_loss(config, num_classes, None, mixed_labels=fit.mixed_labels),
                                optimizer=opt, class_weights=weights, epochs=phase.epochs, initial_epoch=initial,
                                steps=steps, callbacks=cbs, num_classes=num_classes)
        else:
            fit.model.fit(fit.train, epochs=phase.epochs, initial_epoch=initial, verbose=0, callbacks=cbs,
                          steps_per_epoch=fit.steps_per_epoch)  # class weights: in fit.train (_with_class_weights)
    finally:
        reporter.close()  # also when fit raised: no live bar left under the error line
    return validate.last if validate is not None else None


def _resume_command(config: TrainConfig, out: str) -> str:
    return f"imgclass {config.command} {shlex.quote(str(config.data))} --resume {shlex.quote(str(out))}"


def _with_resume_hint(e: ImgclassError, config: TrainConfig, out: str, every_worker: bool = False) -> ImgclassError:
    folder = ckpt.checkpoint_dir(out)
    if not os.path.exists(os.path.join(folder, files.STATE)):
        return e
    done = ckpt.read_state(folder)
    how = "continue by running on every worker" if every_worker else "continue with"
    return ImgclassError(f"{e.message}; the checkpoint of phase {done['phase']}, {done['epoch']} epoch(s) is intact: "
                         f"{how}: {_resume_command(config, out)}", exit_code=e.exit_code)


def _interrupted(e: BaseException, config: TrainConfig, out: str, position: dict | None) -> ImgclassError:
    """The message after SIGINT/SIGTERM: where the checkpoint is and the command that continues the run."""
    folder = ckpt.checkpoint_dir(out)
    what = f"interrupted ({interrupts.signal_name(e)})"
    if position is None:
        if not os.path.exists(os.path.join(folder, files.STATE)):
            return ImgclassError(f"{what} before the first epoch ended; nothing to resume: run the same command again",
                                 exit_code=interrupts.exit_code(e))
        position = ckpt.read_state(folder)
    return ImgclassError(f"{what}; checkpoint saved in {folder} (phase {position['phase']}, "
                         f"{position['epoch']} epoch(s) done); continue with: {_resume_command(config, out)}",
                         exit_code=interrupts.exit_code(e))
