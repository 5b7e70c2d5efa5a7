"""Dataclasses holding every option and its default: the single source of truth for the CLI, its help and the core
(each field declared once with `options.option`)."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from imgclass_cli import options
from imgclass_cli.files import EXPLAIN_DIR
from imgclass_cli.options import option


class Augment(str, Enum):
    none = "none"
    light = "light"
    strong = "strong"


class Precision(str, Enum):
    """What the model computes in (precision.py chooses the Keras dtype policy). Weights, the softmax and the loss
    stay float32 in every case; saved models and exports take and give float32."""

    auto = "auto"  # bfloat16 where the hardware has it (GPU 8.0+, CPU with AMX-BF16/AVX512-BF16), float16 on 7.x GPUs
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Resize(str, Enum):
    """How an image becomes the model's square input: in the decoder (data.imagefile.decode) and in the model's
    Resizing layer alike."""

    squash = "squash"  # the whole image, aspect ratio not kept
    crop = "crop"  # the centred square of the shorter side (the edges of the longer side are cut off)
    pad = "pad"  # the whole image, aspect ratio kept, black bars on the shorter side


class OutputFormat(str, Enum):
    """What a command writes to stdout (its --format): one set of names for every command."""

    table = "table"  # rich tables, for people
    json = "json"  # one JSON document
    jsonl = "jsonl"  # one JSON record per line, streamed
    csv = "csv"


def _formats(name: str, *names: str) -> type[Enum]:
    """A command's --format choices: the OutputFormat names that make sense for its output, in OutputFormat order
    (a str Enum, so members compare equal to OutputFormat's values)."""
    return Enum(name, [(f.name, f.value) for f in OutputFormat if f.name in names], type=str, module=__name__)


EvalFormat = _formats("EvalFormat", "table", "json", "csv")  # one report: no per-line records
PredictFormat = _formats("PredictFormat", "table", "jsonl", "csv")  # streamed records, one per image
PrepareFormat = _formats("PrepareFormat", "table", "json")
BackbonesFormat = _formats("BackbonesFormat", "table", "json", "csv")
AuditFormat = _formats("AuditFormat", "table", "json", "csv")


class OnBadImage(str, Enum):
    skip = "skip"
    fail = "fail"


class ClassWeight(str, Enum):
    none = "none"
    auto = "auto"  # "balanced": n_samples / (n_classes * count(class)), scikit-learn's compute_class_weight


class Strategy(str, Enum):
    """How train and finetune spread over devices and machines (run/distribute.py)."""

    auto = "auto"  # multiworker when TF_CONFIG names a cluster, mirrored with more than one GPU, else default
    default = "default"  # one device: tf.distribute's default strategy and Keras fit
    mirrored = "mirrored"  # every local GPU (or logical CPU device) of this machine, Keras fit
    multiworker = "multiworker"  # several processes/machines from TF_CONFIG, imgclass's own training loop


class Example(str, Enum):
    digits = "digits"


SCRATCH_ARCHS = ("cnn", "simple-cnn")
# Image sizes: --image-size below MIN_IMAGE_SIZE is refused for any architecture; each scratch CNN and backbone
# has its own minimum (SCRATCH_MIN_SIZE, backbones.py); scratch CNNs default to DEFAULT_SCRATCH_IMAGE_SIZE, or the
# images' own size when they are smaller (model.build.resolve_image_size is the one resolver).
MIN_IMAGE_SIZE = 8
MAX_IMAGE_SIZE = 8192  # read back from run and export files: larger would not fit in memory anyway
DEFAULT_SCRATCH_IMAGE_SIZE = 128
SCRATCH_MIN_SIZE = {"cnn": MIN_IMAGE_SIZE, "simple-cnn": 32}  # three unpadded 3x3 conv + pool blocks need 32 px
# The one resize of the project, in the decoder (data.imagefile.decode) and in every model's Resizing layer.
RESIZE_INTERPOLATION = "bilinear"
RESIZE_ANTIALIAS = True
DEFAULT_SEED = 42
DEFAULT_BATCH_SIZE = 32
DEFAULT_GALLERY = 24  # evaluate --gallery: four rows of six, enough to see a pattern, cheap enough (Grad-CAM of 2N)


class AutoRule:
    """A default that depends on the data: computes the value and the sentence that explains it. `rule` is the
    rule in words, for --help and the docs; `explain(n)` gives (value, "the default for N ...: rule; --flag sets
    it"); calling the rule gives the value alone."""

    def __init__(self, flag: str, basis: str, rule: str, compute: Callable[[int], int | float]):
        self.flag, self.basis, self.rule, self.compute = flag, basis, rule, compute

    def __call__(self, n: int):
        return self.compute(n)

    def explain(self, n: int) -> tuple[int | float, str]:
        return self.compute(n), f"the default for {self.basis.format(n=n)}: {self.rule}; {self.flag} sets it"


# Automatic training length, batch and learning rate for `train` (figures: docs/benchmarks.md, "train defaults").
AUTO_EPOCHS = (5, 12)  # so that about AUTO_EPOCHS_IMAGES training images go by, within these bounds
AUTO_EPOCHS_IMAGES = 288_000
AUTO_BATCH = (16, 32, 64)  # the largest giving at least AUTO_BATCH_STEPS steps an epoch; small photo sets learn
AUTO_BATCH_STEPS = 16      # better with more steps
AUTO_LR, AUTO_LR_BATCH = 8e-3, 64  # the linear scaling rule: AUTO_LR at a batch of AUTO_LR_BATCH


def _auto_batch(train_images: int) -> int:
    return next((b for b in sorted(AUTO_BATCH, reverse=True) if train_images >= b * AUTO_BATCH_STEPS), min(AUTO_BATCH))


auto_epochs = AutoRule(
    "--epochs", "{n} training images", f"about {AUTO_EPOCHS_IMAGES:,} images in {AUTO_EPOCHS[0]} to {AUTO_EPOCHS[1]} epochs",
    lambda n: max(AUTO_EPOCHS[0], min(AUTO_EPOCHS[1], math.ceil(AUTO_EPOCHS_IMAGES / max(1, n)))))
auto_batch_size = AutoRule(
    "--batch-size", "{n} training images",
    f"{max(AUTO_BATCH)}, smaller when an epoch would have fewer than {AUTO_BATCH_STEPS} steps, down to {min(AUTO_BATCH)}",
    _auto_batch)
auto_learning_rate = AutoRule(
    "--learning-rate", "batch size {n}", f"{AUTO_LR:g} x batch / {AUTO_LR_BATCH}",
    lambda batch: AUTO_LR * batch / AUTO_LR_BATCH)

_INF = math.inf
_SEED = dict(range=(0, 2**32 - 1), env="IMGCLASS_SEED")
# Upper bounds of the sizes a command line may ask for: each is held in memory at once, so a typo (an extra zero)
# fails in a second with the reason, not in an out-of-memory kill.
MAX_BATCH_SIZE = 65_536
MAX_PARITY_IMAGES = 10_000
MAX_TOP_K = 100_000  # run.rundir.MAX_CLASSES: no model imgclass reads has more classes
MAX_AUG_VIEWS = 10_000
_GALLERY = dict(range=(0, _INF), cap=10**6, metavar="N", env="IMGCLASS_GALLERY")  # evaluate's and audit's pages
_BATCH = dict(range=(1, MAX_BATCH_SIZE), cap=2**20, env="IMGCLASS_BATCH_SIZE",
              help=f"Images per batch, at most {MAX_BATCH_SIZE:,} (a batch is decoded into memory at once).")
_BAD_IMAGE = dict(env="IMGCLASS_ON_BAD_IMAGE", help="An unreadable, corrupt, tiny or oversized image: skip it with a "
                  "warning naming the file, or fail at once (exit 2).")
_PRECISION = dict(env="IMGCLASS_PRECISION", help="What the model computes in. auto: bfloat16 on GPUs of compute "
                  "capability 8.0+ and on CPUs with AMX-BF16 or AVX512-BF16, float16 (with loss scaling) on 7.x "
                  "GPUs, else float32. A precision this machine lacks is refused (exit 2). Weights, softmax and loss "
                  "stay float32.")
_EXCLUDE = dict(metavar="FILE", show_default=False,
                help="Leave out the images this file lists (one path per line, relative to DATA or absolute; "
                "`imgclass audit --exclude-list` writes one); nothing in DATA is moved or deleted.")
FORMAT_HELP = "Format of stdout: table for people, json/jsonl/csv for programs."
_FINETUNE = ("finetune",)


@dataclass
class TrainConfig:
    """Everything `train` and `finetune` need; saved as config.json in the run directory. Each field is declared
    once, with both commands' defaults (the dataclass default is train's; `defaults("finetune")` gives finetune's)."""

    command: str = "train"
    data: str = ""
    arch: str = option(
        "cnn", "--arch", help="cnn (BatchNorm CNN), simple-cnn (the classic 3-conv net), or any backbone name trained "
        "from scratch.",
        finetune=dict(default="mobilenetv2", flags=("--backbone", "-b"), env=("IMGCLASS_BACKBONE",),
                      help="Keras Applications backbone (see `imgclass backbones`); with --weights RUN, that run's "
                      "network."))
    weights: str = option(
        "none", "--weights", help="none, imagenet, or a weights file (backbone --arch only).",
        finetune=dict(default="imagenet", help="imagenet (download or Keras cache), a local weights file, or RUN: the "
                      "--out folder of an earlier train or finetune run (any architecture; its network up to the "
                      "pooling layer is the backbone). none: a random frozen backbone, useful only with --unfreeze."))
    image_size: int | None = option(
        None, "--image-size", range=(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE), env="IMGCLASS_IMAGE_SIZE", show_default=False,
        help=f"Square input size in pixels, at most {MAX_IMAGE_SIZE} (a larger model input would not fit in memory) "
        f"[default: with --weights RUN that run's size; else the backbone's own size; scratch CNNs: the images' own "
        f"size when below {DEFAULT_SCRATCH_IMAGE_SIZE}, else {DEFAULT_SCRATCH_IMAGE_SIZE}].")
    epochs: int | None = option(
        None, "--epochs", range=(1, _INF), cap=10**7, env="IMGCLASS_EPOCHS", help="Training epochs.",
        show_default=auto_epochs.rule,  # None: auto_epochs once the training images are counted
        finetune=dict(default=5, help="Epochs training the head on the frozen backbone.", show_default=None))
    batch_size: int | None = option(
        None, "--batch-size", **_BATCH, show_default=auto_batch_size.rule,  # None: auto_batch_size
        finetune=dict(default=DEFAULT_BATCH_SIZE, show_default=None))
    learning_rate: float | None = option(
        None, "--learning-rate", "--lr", range=(0.0, _INF), help="Adam learning rate.",
        show_default=f"{auto_learning_rate.rule}: {AUTO_LR:g} at {AUTO_LR_BATCH}, {auto_learning_rate(16):g} at 16",
        finetune=dict(default=1e-3, show_default=None))  # None: auto_learning_rate once the batch is known
    # No augmentation by default: on 2 cores it doubles a scratch epoch, and on a transfer task it cost accuracy
    # (docs/benchmarks.md, "augmentation").
    augment: Augment = option(Augment.none, "--augment", help="Augmentation of training batches: light (flip, "
                              "rotation, zoom), strong (flip, RandAugment, then MixUp or CutMix per batch). Printed, "
                              "and shown in RUN/augment_preview.png.")
    resize: Resize = option(Resize.squash, "--resize", help="How an image becomes the square input, in training and "
                            "in the saved model alike: squash (the whole image, stretched), crop (the centre "
                            "square) or pad (the whole image, black bars).")
    precision: Precision = option(Precision.auto, "--precision", **_PRECISION)
    val_split: float = option(0.2, "--val", range=(0.0, 0.9),
                              help="Validation fraction when there is no val/ folder (stratified, seeded; prepare's "
                              "--val).")
    dropout: float = option(0.2, "--dropout", range=(0.0, 0.95), help="Dropout before the classifier.")
    seed: int = option(DEFAULT_SEED, "--seed", **_SEED, help="Seed for the split, shuffling, augmentation and "
                       "initialisation (0 to 2**32 - 1, NumPy's range).")
    out: str | None = option(None, "--out", "-o", metavar="PATH", show_default=False,
                             help="Run directory [default: runs/COMMAND-TIMESTAMP].")
    on_bad_image: OnBadImage = option(OnBadImage.skip, "--on-bad-image", **_BAD_IMAGE)
    exclude: str | None = option(None, "--exclude", **_EXCLUDE)
    # Optimisation. weight_decay > 0 switches Adam to AdamW (decoupled decay).
    weight_decay: float = option(5e-4, "--weight-decay", range=(0.0, _INF),
                                 help="Decoupled weight decay (AdamW) on kernels; 0 = plain Adam.",
                                 finetune=dict(default=0.0))
    label_smoothing: float = option(0.1, "--label-smoothing", range=(0.0, 0.5),
                                    help="Label smoothing of the cross-entropy.", finetune=dict(default=0.0))
    warmup_epochs: float = option(1.0, "--warmup-epochs", range=(0.0, _INF),
                                  help="Linear learning-rate warm-up before the cosine decay.",
                                  finetune=dict(default=0.0))
    class_weight: ClassWeight = option(ClassWeight.none, "--class-weight",
                                       help="auto: weight classes n/(k*count) (balanced) for imbalanced folders.")
    calibrate: bool = option(True, "--calibrate/--no-calibrate",
                             help="At the end, fit a temperature on the validation split (temperature scaling) so "
                             "confidences match accuracy; it is saved in the model, so evaluate, predict and every "
                             "export give calibrated probabilities. --no-calibrate keeps T = 1.")
    patience: int = option(0, "--patience", range=(0, _INF), cap=10**7, help="Stop after this many epochs without a better "
                           "val loss and keep the best weights; 0 = off.")
    resume: str | None = option(None, "--resume", metavar="PATH", show_default=False,
                                help="Continue an interrupted run (its --out folder) with its saved options.")
    strategy: Strategy = option(Strategy.auto, "--strategy", env="IMGCLASS_STRATEGY",
                                help="auto: multiworker when TF_CONFIG names a cluster, mirrored with more than one "
                                "GPU, else default. --batch-size stays the global batch (docs/scaling.md).")
    # Fine-tuning: phase 2 unfreezes the top of the backbone; BatchNorm stays frozen.
    unfreeze: int = option(0, "--unfreeze", range=(0, _INF), cap=10**7, commands=_FINETUNE,
                           help="Phase 2: also train the top N backbone layers, counted as Keras lists them "
                           "(BatchNorm layers among them stay frozen; layers without weights have nothing to train).")
    unfreeze_from: str | None = option(None, "--unfreeze-from", show_default=False, commands=_FINETUNE,
                                       help="Phase 2: train every backbone layer from this one (a Keras layer name) "
                                       "up.")
    finetune_epochs: int = option(5, "--finetune-epochs", range=(0, _INF), cap=10**7, commands=_FINETUNE,
                                  help="Epochs of phase 2 (with --unfreeze/--unfreeze-from).")
    finetune_lr_scale: float = option(0.1, "--finetune-lr-scale", range=(0.0, _INF), commands=_FINETUNE,
                                      help="Phase 2 learning rate = --learning-rate times this.")
    cache: bool = option(True, "--cache/--no-cache", commands=_FINETUNE,
                         help="Run the frozen backbone once and train on its cached outputs (exact; much faster).")
    aug_views: int = option(1, "--aug-views", range=(1, MAX_AUG_VIEWS), commands=_FINETUNE,
                            help=f"With --augment and the cache: augmented views cached per image (at most "
                            f"{MAX_AUG_VIEWS:,}: every view of every image is kept).")
    cache_dir: str | None = option(None, "--cache-dir", metavar="PATH", show_default=False, commands=_FINETUNE,
                                   help="Folder for a feature cache too big for memory [default: beside --out].")

    @classmethod
    def defaults(cls, command: str = "train", **values) -> "TrainConfig":
        return options.defaults(cls, command, values)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: (v.value if isinstance(v, Enum) else v) for k, v in d.items()}

    def options(self) -> dict:
        """The options of this run's command (config.json): a train run does not list finetune's."""
        d = self.to_dict()
        mine = {x.name for x in options.declared(TrainConfig, self.command)} | {"command", "data"}
        return {k: v for k, v in d.items() if k in mine}

    @classmethod
    def from_dict(cls, d: dict, source: str = "config.json", prefix: str = "options.") -> "TrainConfig":
        """A config read from a file (a run's config.json, a checkpoint's state.json): every known field is
        checked for its type and range; a violation is an ImgclassError (exit 2) naming `source` and the field.
        A missing field takes its command's default; unknown keys are ignored (files written by other versions)."""
        from imgclass_cli.errors import ImgclassError

        if not isinstance(d, dict):
            raise ImgclassError(f"{source}: field {prefix.rstrip('.')} must be an object")
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            bounds = options.bounds_of(cls, f.name)
            value = options.check_field(d[f.name], hints[f.name], bounds)
            if value is options.INVALID:
                allowed = f" (allowed: {bounds[0]} to {bounds[1]})" if bounds else ""
                raise ImgclassError(f"{source}: field {prefix}{f.name} has an invalid value {d[f.name]!r:.80}{allowed}")
            values[f.name] = value
        command = values.get("command", "train")
        return options.defaults(cls, command if command in ("train", "finetune") else "train", values)


@dataclass
class RunFlags:
    """How train and finetune run, not what they train: not recorded in config.json."""

    force: bool = option(False, "--force", help="Replace an existing run directory.")
    tensorboard: bool = option(False, "--tensorboard", env="IMGCLASS_TENSORBOARD",
                               help="Write TensorBoard logs (RUN/tensorboard when done).")


@dataclass
class Progress:
    """Every command but `backbones`: whether progress goes to stderr."""

    quiet: bool = option(False, "--quiet", "-q", env="IMGCLASS_QUIET", help="No progress on stderr.")


# Temperature scaling at the end of train and finetune (report/calibration.py): below this many validation images a
# fitted temperature is noise, so T stays 1; a fit on a bound of TEMPERATURE_BOUNDS has no minimum inside them (a
# validation split without mistakes) and leaves T at 1 too.
MIN_CALIBRATION_IMAGES = 50
TEMPERATURE_BOUNDS = (0.05, 20.0)
# --tta: the views averaged (run/inference.py); the corner crops keep this fraction of the side.
TTA_CROP = 0.9
_TTA_HELP = ("Test-time augmentation: average the probabilities over the original image, its four corner crops of "
             f"{TTA_CROP:.0%} of the side (each resized back to the model's input size) and, for a run trained with "
             "--augment light or strong, its horizontal flip: 6 views (5 without the flip), that many forward passes.")


@dataclass
class PredictConfig:
    top_k: int = option(1, "--top-k", "-k", range=(1, MAX_TOP_K), env="IMGCLASS_TOP_K",
                        help=f"Classes to report per image (at most {MAX_TOP_K:,}, more than any model has).")
    format: PredictFormat = option(
        PredictFormat.table, "--format", "-f", env=("IMGCLASS_PREDICT_FORMAT", "IMGCLASS_FORMAT"),
        help=f"{FORMAT_HELP} jsonl and csv: one record per image, in input order, as it is predicted.")
    batch_size: int = option(DEFAULT_BATCH_SIZE, "--batch-size", **_BATCH)
    strict: bool = option(False, "--strict", help="Exit 1 if any image could not be read.")
    # skip: an error record and a warning; fail: stop at the first
    on_bad_image: OnBadImage = option(OnBadImage.skip, "--on-bad-image", **_BAD_IMAGE)
    shard: tuple[int, int] | None = option(
        None, "--shard", metavar="I/N", show_default=False, parse=options.parse_shard,
        help="Predict only part I of N (1-based) of the inputs sorted by path, duplicates removed; the N parts "
        "together are every input once (CI matrix, job arrays).")
    min_confidence: float | None = option(
        None, "--min-confidence", range=(0.0, 1.0), metavar="P", show_default=False,
        help="Records whose top-1 confidence (calibrated) is below P get status unsure, with their label and "
        "confidence still given (evaluate's risk_coverage shows what each P answers and how well).")
    tta: bool = option(False, "--tta", help=_TTA_HELP + " An export directory or .tflite file gets the crops only "
                       "(its training augmentation is not recorded).")
    precision: Precision = option(Precision.auto, "--precision", **_PRECISION)


@dataclass
class EvalConfig:
    # For a train/val/test folder: test if present, else val.
    split: str | None = option(None, "--split", show_default=False,
                               help="For a train/val/test folder: which split [default: test, else val].")
    format: EvalFormat = option(EvalFormat.table, "--format", "-f", env=("IMGCLASS_EVALUATE_FORMAT", "IMGCLASS_FORMAT"),
                                help=f"{FORMAT_HELP} csv: one metric per row.")
    out: str | None = option(None, "--out", "-o", metavar="PATH", show_default=False,
                             help="Write the metrics JSON here instead of RUN/metrics.json; misclassified.csv, "
                             "confusion_matrix.png, reliability.png, report.html and mistakes.png go beside it.")
    fail_under: str | None = option(
        None, "--fail-under", env="IMGCLASS_FAIL_UNDER", metavar="METRIC=MIN,...", show_default=False,
        help="Exit 3 if a metric is below its threshold, e.g. accuracy=0.9,f1_macro=0.85 (any metrics.json key where "
        "higher is better: top_k_accuracy.top_3, per_class.NAME.recall).")
    fail_over: str | None = option(
        None, "--fail-over", env="IMGCLASS_FAIL_OVER", metavar="METRIC=MAX,...", show_default=False,
        help="Exit 3 if a metric where lower is better is above its maximum, e.g. ece=0.05,nll=0.4 (ece, nll, brier "
        "and their _uncalibrated forms; seen_by_run.fraction=0 refuses images the run trained or validated on; "
        "prediction_collapse.share).")
    target_accuracy: float | None = option(
        None, "--target-accuracy", range=(0.0, 1.0), metavar="ACCURACY", show_default=False,
        help="Also find the lowest confidence threshold whose answered images reach this accuracy (metrics.json "
        "target: the predict --min-confidence to use, and the coverage it keeps).")
    tta: bool = option(False, "--tta", help=_TTA_HELP)
    batch_size: int = option(DEFAULT_BATCH_SIZE, "--batch-size", **_BATCH)
    on_bad_image: OnBadImage = option(OnBadImage.skip, "--on-bad-image", **_BAD_IMAGE)
    precision: Precision = option(Precision.auto, "--precision", **_PRECISION)
    gallery: int = option(DEFAULT_GALLERY, "--gallery", **_GALLERY,
                          help="report.html and mistakes.png: the N most confident mistakes, each beside its "
                          "Grad-CAM heatmap, and per true class its most confident ones (up to N in all); 0: none.")


@dataclass
class ExplainConfig:
    class_name: str | None = option(None, "--class", metavar="NAME", show_default=False,
                                    help="Explain this class instead of the predicted one.")
    out: str | None = option(None, "--out", "-o", metavar="DIR", show_default=False,
                             help=f"Folder for NAME.png and NAME.npy per image [default: RUN/{EXPLAIN_DIR}]; a file "
                             "of yours there is never replaced.")
    batch_size: int = option(DEFAULT_BATCH_SIZE, "--batch-size", **_BATCH)


class ExportFormat(str, Enum):
    savedmodel = "savedmodel"
    tflite = "tflite"
    keras = "keras"
    onnx = "onnx"


class Quantize(str, Enum):
    float16 = "float16"
    int8 = "int8"


@dataclass
class ExportConfig:
    format: ExportFormat = option(ExportFormat.tflite, "--to", help="The model file format: savedmodel (TF Serving), "
                                  "tflite (mobile, edge), onnx (ONNX Runtime; `pip install imgclass[onnx]`) or keras.")
    quantize: Quantize | None = option(None, "--quantize", show_default=False,
                                       help="tflite only: float16 (half size), int8 (full-integer, calibrated on the "
                                       "run's training images).")
    out: str | None = option(None, "--out", "-o", metavar="PATH", show_default=False,
                             help="Export directory [default: RUN/export/TO[-QUANTIZE], e.g. RUN/export/tflite-int8].")
    # Images compared between the export and the Keras model; 0 skips the check.
    parity: int = option(100, "--parity", range=(0, MAX_PARITY_IMAGES), metavar="N",
                         help=f"Compare top-1 of the export and the Keras model on N images (0: skip; at most "
                         f"{MAX_PARITY_IMAGES:,}: they are decoded into memory at once).")
    min_agreement: float = option(0.99, "--min-agreement", range=(0.0, 1.0),
                                  help="Fail (exit 3, nothing written) below this top-1 agreement.")
    data: str | None = option(None, "--data", metavar="PATH", show_default=False,
                              help="Images for the parity check and int8 calibration [default: the run's recorded val "
                              "and train images].")
    force: bool = option(False, "--force", help="Replace an existing export directory (one written by imgclass "
                         "export; never any other folder).")


# Multi-worker training: a collective (all-reduce) waiting longer than this for a peer fails the run with a clear
# error instead of hanging (a dead peer on a refused connection fails at once; this catches a hung one). It must
# cover the longest legitimate wait: one peer's checkpoint write or validation pass. IMGCLASS_COLLECTIVE_TIMEOUT.
COLLECTIVE_TIMEOUT_SECONDS = 600.0

# Estimated decoded-image bytes above which the pipeline streams from disk instead of caching in memory.
MEMORY_CACHE_LIMIT_BYTES = 2 * 1024**3

# Data checks shared by prepare, train, finetune, evaluate and predict (verify.py).
MAX_IMAGE_PIXELS = 64_000_000  # larger images are refused before decoding (bounded memory); prepare --max-size
MIN_IMAGE_SIDE = 4  # narrower or shorter images (a 1x1 tracking pixel) carry no class information
SMALL_IMAGE_SIDE = 32  # reported by prepare as small, still used
IGNORED_NAMES = ("Thumbs.db", "desktop.ini", "Icon\r")  # system files ignored like hidden files

# prepare --tfrecord: ~100 MB shards (the size TensorFlow's data-input guide suggests: large enough for sequential
# reads from a bucket, small enough for many of them to be read in parallel).
DEFAULT_SHARD_SIZE = 100 * 10**6
DEFAULT_HOLDOUT = 0.1  # prepare's --val and --test for a folder of class folders


@dataclass
class PrepareConfig:
    val: float | None = option(None, "--val", range=(0.0, 0.9), show_default=False,
                               help=f"Validation fraction per class [default: {DEFAULT_HOLDOUT}; an existing val/ "
                               "folder is kept].")
    test: float | None = option(None, "--test", range=(0.0, 0.9), show_default=False,
                                help=f"Test fraction per class [default: {DEFAULT_HOLDOUT}; an existing test/ folder "
                                "is kept].")
    seed: int = option(DEFAULT_SEED, "--seed", **_SEED,
                       help="Seed for the stratified split (and the example dataset's test split).")
    copy: bool = option(False, "--copy", help="Copy files instead of hardlinking them (copies where hardlinks fail).")
    max_size: int | None = option(None, "--max-size", range=(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE), metavar="N",
                                  show_default=False, help="Write downscaled copies (longer side N, aspect kept, "
                                  "EXIF orientation applied) of larger images.")
    format: PrepareFormat = option(PrepareFormat.table, "--format", "-f", help=FORMAT_HELP)
    tfrecord: bool = option(False, "--tfrecord", help="Write the images as TFRecord shards (encoded bytes, label, "
                            "source path) plus the manifest, instead of class folders of links.")
    shard_size: int = option(DEFAULT_SHARD_SIZE, "--shard-size", metavar="SIZE", parse=options.parse_size,
                             show_default=f"{DEFAULT_SHARD_SIZE // 10**6}MB",
                             help="With --tfrecord: about this many bytes of images per shard (KB, MB, GB; KiB, MiB, "
                             "GiB).")
    example: Example | None = option(None, "--example", show_default=False,
                                     help="Write an embedded example dataset to OUT (digits: scikit-learn's 1,797 "
                                     "real 8x8 digits).")
    from_tfds: str | None = option(None, "--from-tfds", metavar="NAME[:SPLIT]", show_default=False,
                                   help="Export a tensorflow-datasets image classification dataset to OUT as class "
                                   "folders.")
    data_dir: str | None = option(None, "--data-dir", metavar="PATH", show_default=False,
                                  help="tensorflow-datasets data folder [default: ~/tensorflow_datasets].")
    force: bool = option(False, "--force", help="Replace an OUT written by an earlier prepare (never any other "
                         "folder).")
    exclude: str | None = option(None, "--exclude", **{**_EXCLUDE, "help": _EXCLUDE["help"].replace("DATA", "SRC")})


@dataclass
class BackbonesConfig:
    format: BackbonesFormat = option(BackbonesFormat.table, "--format", "-f", help=FORMAT_HELP)


@dataclass
class ExampleConfig:
    test_fraction: float = 0.2  # prepare --example digits: held-out test/ split
    seed: int = DEFAULT_SEED


# imgclass audit: what each check flags (docs/guide.md, "Audit"; the figures behind them: docs/benchmarks.md,
# "Audit"). Quality is measured on the image as decoded for the audit (AUDIT_IMAGE_SIZE, or the --run/--backbone
# size); brightness and contrast on its luma (0-255).
AUDIT_GATES = ("label", "leak", "duplicate", "quality")  # the kinds --fail-on and --exclude-kinds name
# The kinds of issue: a copy of a picture in another split (leak), in another class of one split (conflict) or in
# the same class and split (duplicate); image quality; and which --fail-on name covers each.
AUDIT_PAIR_KINDS = ("leak", "conflict", "duplicate")
AUDIT_QUALITY_KINDS = ("dark", "bright", "low_contrast", "blurry", "tiny", "aspect_ratio", "grayscale")
AUDIT_KINDS = ("label", *AUDIT_PAIR_KINDS, *AUDIT_QUALITY_KINDS)
AUDIT_GATE_KINDS = {"label": ("label",), "leak": ("leak",), "duplicate": ("conflict", "duplicate"),
                    "quality": AUDIT_QUALITY_KINDS}
AUDIT_IMAGE_SIZE = 224  # the decode size without --run/--backbone: blur needs the detail
DARK_P99 = 50.0  # dark: fewer than 1% of the pixels brighter than this (the 398 ants/bees photos: 108 at least)
BRIGHT_P05 = 225.0  # nearly white: 95% of the pixels brighter than this (ants/bees: 136 at most, 233 the placeholder)
BLOWN_SHARE = 0.7  # blown out: more of the pixels than this with a channel clipped at 250+ (ants/bees: two white-
# background photos above, 0.70 and 0.88)
LOW_CONTRAST_STD = 8.0  # low contrast: luma standard deviation below this (ants/bees: 11.9 at least)
BLUR_FRACTION = 0.12  # blurry: variance of the Laplacian below this fraction of the set's median
TINY_FRACTION = 0.25  # tiny: shorter side below this fraction of the set's median shorter side
ASPECT_LIMIT = 3.0  # extreme aspect ratio: longer / shorter side above this (or 2x the set's median, if larger)
GRAY_SPREAD = 1.0  # grayscale: mean |R-G| + |G-B| below this, in a set where most images have colour
# Near-duplicates (data/neardup.py): a 64-bit perceptual hash of the image and of 27 crops of it finds candidates
# within DUP_COARSE_BITS; a 256-bit one of the same views confirms: within DUP_SURE_BITS always, within
# DUP_FINE_BITS when DUP_RATIO times the nearest other candidate is farther. Resized, recompressed and up to
# 10%-cropped copies of ants/bees photos came within 6 and 56 bits; two different photos, 78 fine bits at least.
DUP_COARSE_BITS = 6
DUP_SURE_BITS = 24
DUP_FINE_BITS = 56
DUP_RATIO = 0.7
DEFAULT_FOLDS = 5


def parse_kinds(text) -> tuple[str, ...]:
    """'label,leak' -> ('label', 'leak'): the audit kinds of --fail-on and --exclude-kinds, each once; 'all' is every
    kind."""
    from imgclass_cli.errors import ImgclassError

    if isinstance(text, tuple):
        return text
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if names == ["all"]:
        return AUDIT_GATES
    unknown = [n for n in names if n not in AUDIT_GATES]
    if unknown or not names:
        raise ImgclassError(f"must be a comma-separated list of {', '.join(AUDIT_GATES)} (or all); got {text}")
    return tuple(k for k in AUDIT_GATES if k in names)


@dataclass
class AuditConfig:
    run: str | None = option(None, "--run", metavar="RUN", show_default=False,
                             help="Embeddings from this run's penultimate layer (the input of its classifier), for "
                             "the label check.")
    backbone: str | None = option(None, "--backbone", "-b", metavar="NAME", show_default=False,
                                  help="Embeddings from this frozen Keras Applications backbone, pooled (see "
                                  "`imgclass backbones`), for the label check.")
    weights: str = option("imagenet", "--weights", metavar="WEIGHTS",
                          help="With --backbone: imagenet (download or Keras cache), none (random: weak), or a "
                          "weights file.")
    image_size: int | None = option(None, "--image-size", range=(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE), show_default=False,
                                    help=f"Decode size [default: the run's or the backbone's size; "
                                    f"{AUDIT_IMAGE_SIZE} without either].")
    folds: int = option(DEFAULT_FOLDS, "--folds", range=(2, 100),
                        help="Cross-fitting folds of the label check (stratified, seeded): every image gets "
                        "probabilities from a classifier that did not see it.")
    seed: int = option(DEFAULT_SEED, "--seed", **_SEED, help="Seed for the folds.")
    out: str | None = option(None, "--out", "-o", metavar="PATH", show_default=False,
                             help="Folder for audit.json, issues.csv and audit.html [default: audits/audit-TIMESTAMP].")
    force: bool = option(False, "--force", help="Replace an --out folder written by an earlier audit (never any "
                         "other folder).")
    format: AuditFormat = option(AuditFormat.table, "--format", "-f", env=("IMGCLASS_AUDIT_FORMAT", "IMGCLASS_FORMAT"),
                                 help=f"{FORMAT_HELP} table: issues per kind and class; json: audit.json; csv: "
                                 "issues.csv.")
    fail_on: tuple[str, ...] | None = option(
        None, "--fail-on", metavar="KINDS", parse=parse_kinds, env="IMGCLASS_FAIL_ON", show_default=False,
        help=f"Exit 3 when any issue of these kinds is found: a comma-separated list of {', '.join(AUDIT_GATES)}, "
        "or all.")
    exclude_list: str | None = option(None, "--exclude-list", metavar="FILE", show_default=False,
                                      help="Write the paths to leave out (for prepare/train --exclude), one per line, "
                                      "relative to DATA.")
    exclude_kinds: tuple[str, ...] | str = option(
        "all", "--exclude-kinds", metavar="KINDS", parse=parse_kinds,
        help="Which issues --exclude-list leaves out: label (the image), duplicate and leak (all copies but one; "
        "copies with different classes: all), quality (the image).")
    batch_size: int = option(DEFAULT_BATCH_SIZE, "--batch-size", **_BATCH)
    precision: Precision = option(Precision.auto, "--precision", **_PRECISION)
    on_bad_image: OnBadImage = option(OnBadImage.skip, "--on-bad-image", **_BAD_IMAGE)
    gallery: int = option(DEFAULT_GALLERY, "--gallery", **_GALLERY,
                          help="audit.html: up to N examples of each kind of issue found, the highest scores first "
                          "(near-duplicates as pairs side by side); 0: counts and checks only.")
