"""Dataclasses holding every option and its default: the single source of truth for CLI help and core."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from enum import Enum


class Augment(str, Enum):
    none = "none"
    light = "light"
    strong = "strong"


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


@dataclass
class TrainConfig:
    """Everything `train` and `finetune` need; saved as config.json in the run directory."""

    command: str = "train"
    data: str = ""
    arch: str = "cnn"  # train: cnn | simple-cnn | a backbone name; finetune: a backbone name
    weights: str = "none"  # imagenet | none | PATH (finetune defaults to imagenet)
    image_size: int | None = None  # None: the backbone's default size, or 128 for scratch CNNs
    batch_size: int | None = DEFAULT_BATCH_SIZE  # None: auto_batch_size() once the training images are counted
    epochs: int | None = 10  # None: auto_epochs() once the training images are counted
    learning_rate: float | None = 1e-3  # None: auto_learning_rate() once the batch size is known
    augment: Augment = Augment.light
    val_split: float = 0.2
    dropout: float = 0.2
    seed: int = DEFAULT_SEED
    on_bad_image: OnBadImage = OnBadImage.skip
    out: str | None = None
    # Optimisation (issue 4). weight_decay > 0 switches Adam to AdamW (decoupled decay).
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    warmup_epochs: float = 0.0  # linear warm-up from 0, then cosine decay to 0
    class_weight: ClassWeight = ClassWeight.none
    patience: int = 0  # early stopping on val_loss (best weights restored); 0 = off
    resume: str | None = None  # a run directory (or its checkpoint) to continue
    # Fine-tuning (issue 4): phase 2 unfreezes the top of the backbone; BatchNorm stays frozen.
    unfreeze: int = 0  # top N backbone layers
    unfreeze_from: str | None = None  # or: every layer from this one up
    finetune_epochs: int = 5
    finetune_lr_scale: float = 0.1
    cache: bool = True  # train the head on cached backbone features (exact; --no-cache: the plain path)
    aug_views: int = 1  # augmented views per image in the feature cache (with --augment)
    cache_dir: str | None = None  # where an on-disk feature cache goes [default: next to --out]
    # Distribution (issue 11): --batch-size stays the global batch under every strategy.
    strategy: Strategy = Strategy.auto

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: (v.value if isinstance(v, Enum) else v) for k, v in d.items()}

    def options(self) -> dict:
        """The options of this run's command (config.json): a train run does not list finetune's."""
        d = self.to_dict()
        return d if self.command == "finetune" else {k: v for k, v in d.items() if k not in FINETUNE_ONLY}

    @classmethod
    def from_dict(cls, d: dict, source: str = "config.json", prefix: str = "options.") -> "TrainConfig":
        """A config read from a file (a run's config.json, a checkpoint's state.json): every known field is
        checked for its type and range; a violation is an ImgclassError (exit 2) naming `source` and the field.
        Unknown keys are ignored (files written by other versions)."""
        from imgclass_cli.errors import ImgclassError

        if not isinstance(d, dict):
            raise ImgclassError(f"{source}: field {prefix.rstrip('.')} must be an object")
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            value = _checked(d[f.name], hints[f.name], OPTION_RANGES.get(f.name))
            if value is _INVALID:
                bounds = OPTION_RANGES.get(f.name)
                allowed = f" (allowed: {bounds[0]} to {bounds[1]})" if bounds else ""
                raise ImgclassError(f"{source}: field {prefix}{f.name} has an invalid value {d[f.name]!r:.80}{allowed}")
            values[f.name] = value
        return cls(**values)


_INVALID = object()
# Ranges of numeric options read back from files: what the CLI accepts, plus caps on what costs memory or time.
_INF = math.inf
OPTION_RANGES: dict[str, tuple[float, float]] = {
    "image_size": (MIN_IMAGE_SIZE, MAX_IMAGE_SIZE), "batch_size": (1, 2**20), "epochs": (1, 10**7), "learning_rate": (0.0, _INF),
    "val_split": (0.0, 0.9), "dropout": (0.0, 0.95), "weight_decay": (0.0, _INF), "label_smoothing": (0.0, 0.5),
    "warmup_epochs": (0.0, _INF), "patience": (0, 10**7), "unfreeze": (0, 10**7), "finetune_epochs": (0, 10**7),
    "finetune_lr_scale": (0.0, _INF), "aug_views": (1, 10_000), "seed": (-(2**63), 2**63 - 1),
}


def _checked(value, hint, bounds):
    """`value` converted to `hint` (str, int, float, bool, an Enum, or X | None) within bounds, or _INVALID."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    if value is None:
        return None if type(None) in options else _INVALID
    for t in options:
        if t is bool and isinstance(value, bool):
            return value
        if isinstance(value, bool):
            continue
        if t is str and isinstance(value, str) and "\0" not in value:
            return value
        if isinstance(t, type) and issubclass(t, Enum):
            try:
                return t(value)
            except ValueError:
                continue
        if t is int and isinstance(value, int) or t is float and isinstance(value, (int, float)):
            if not math.isfinite(value) or (bounds and not bounds[0] <= value <= bounds[1]):
                return _INVALID
            return t(value)
    return _INVALID


FINETUNE_ONLY = ("unfreeze", "unfreeze_from", "finetune_epochs", "finetune_lr_scale", "cache", "aug_views", "cache_dir")

# The scratch recipe (issue 4): on Fashion-MNIST folders it beats the seed's 3-conv net (0.886 in 387-410 s here)
# with 0.9324 test accuracy in 0.86x the seed's time (6 epochs, lr 8e-3; 0.9301 in 0.88-0.90x at 3e-3; bench/fmnist_scratch_vs_seed000.py; before issue
# 12's fourth pass 0.9275 in 1.09x with 5 epochs). Batches of 64 keep 2 CPU cores busy (fewer images per
# batch on small sets: AUTO_BATCH). No augmentation by default: on 2 cores `--augment light` more than doubled the epoch time (measured, 28 px), and
# weight decay + label smoothing regularise instead; pass --augment light for small datasets.
TRAIN_DEFAULTS = TrainConfig(epochs=None, batch_size=None, learning_rate=None, weight_decay=5e-4, label_smoothing=0.1,
                             warmup_epochs=1.0, augment=Augment.none)
# The default training length (train's --epochs unset): 12 epochs, fewer on large sets, so that about 288,000
# training images go by, and at least 5 epochs. Measured on Fashion-MNIST (48,000 training images, cnn, the
# schedule above, imgclass's bench split): 5 epochs gave 0.9262-0.9275 test accuracy, 6 epochs 0.9301-0.9314, 12
# epochs 0.9305. So Fashion-MNIST gets 6 epochs: at least 0.93 in less time than the seed recipe's 10
# (bench/fmnist_scratch_vs_seed000.py). A small photo set (hymenoptera, 196 training images) keeps its 12 epochs.
AUTO_EPOCHS = (5, 12)
AUTO_EPOCHS_IMAGES = 288_000


def auto_epochs(train_images: int) -> int:
    low, high = AUTO_EPOCHS
    return max(low, min(high, math.ceil(AUTO_EPOCHS_IMAGES / max(1, train_images))))


# The default batch (train's --batch-size unset): 64 keeps 2 CPU cores busy on large sets, but a small photo set
# then gets only a few steps an epoch (hymenoptera: 196 training images once 20% of its train/ is held out: 4 steps,
# 48 in 12 epochs). So the largest of 64, 32, 16 that gives at least AUTO_BATCH_STEPS steps an epoch, and 16 below
# that. Measured on hymenoptera
# (tested on its 153 val photos, seeds 42 / 7): batch 64 0.621 / 0.680, batch 16 0.752 / 0.732, in the same time;
# the seed 000 recipe 0.706. Sets of 1,024 training images or more keep 64 (Fashion-MNIST unchanged).
AUTO_BATCH = (16, 32, 64)
AUTO_BATCH_STEPS = 16


def auto_batch_size(train_images: int) -> int:
    for batch in sorted(AUTO_BATCH, reverse=True):
        if train_images >= batch * AUTO_BATCH_STEPS:
            return batch
    return min(AUTO_BATCH)


# The default learning rate (train's --learning-rate unset) scales with the batch: AUTO_LR at a batch of
# AUTO_LR_BATCH, linearly (the linear scaling rule), so 8e-3 at 64 and 2e-3 at 16. Measured on Fashion-MNIST
# (batch 64, 6 epochs, bench/fmnist_scratch_vs_seed000.py), test accuracy with seeds 42 / 7: lr 3e-3 (before)
# 0.9301 / 0.9281, 5e-3 - / 0.9293, 8e-3 0.9324 / 0.9316. On hymenoptera (batch 16, 4 seeds) 8e-3 fell to a mean
# of 0.652 (from 0.732 at 3e-3): hence the scaling, which gives it 2e-3: 0.778 / 0.686 / 0.693 / 0.771, mean 0.732.
AUTO_LR = 8e-3
AUTO_LR_BATCH = 64


def auto_learning_rate(batch_size: int) -> float:
    return AUTO_LR * batch_size / AUTO_LR_BATCH


# No augmentation by default for finetune either: on a transfer task (bench/fmnist_transfer.py, head on a frozen
# pretrained cnn, 10 images per class, seeds 42/7) test accuracy was 0.551/0.418 with --augment none, 0.370/0.416
# with light and one cached view, 0.367/0.386 with 4 views; at 50 per class none led by 8-18 points (issue 10).
FINETUNE_DEFAULTS = TrainConfig(command="finetune", arch="mobilenetv2", weights="imagenet", epochs=5,
                                augment=Augment.none)


@dataclass
class PredictConfig:
    top_k: int = 1
    batch_size: int = DEFAULT_BATCH_SIZE
    format: PredictFormat = PredictFormat.table
    strict: bool = False
    on_bad_image: OnBadImage = OnBadImage.skip  # skip: an error record and a warning; fail: stop at the first


PREDICT_DEFAULTS = PredictConfig()


@dataclass
class EvalConfig:
    batch_size: int = DEFAULT_BATCH_SIZE
    format: EvalFormat = EvalFormat.table
    split: str | None = None  # for a train/val/test folder: test if present, else val
    on_bad_image: OnBadImage = OnBadImage.skip


EVAL_DEFAULTS = EvalConfig()


class ExportFormat(str, Enum):
    savedmodel = "savedmodel"
    tflite = "tflite"
    keras = "keras"


class Quantize(str, Enum):
    float16 = "float16"
    int8 = "int8"


@dataclass
class ExportConfig:
    format: ExportFormat = ExportFormat.tflite
    quantize: Quantize | None = None
    parity: int = 100  # images compared between the export and the Keras model; 0 skips the check
    min_agreement: float = 0.99  # top-1 agreement below this fails the export (exit 3)


EXPORT_DEFAULTS = ExportConfig()

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
MIN_SHARD_SIZE, MAX_SHARD_SIZE = 10**3, 10**12


@dataclass
class PrepareConfig:
    val: float | None = None  # None: 0.1 for a folder of class folders; existing val/ folders are kept
    test: float | None = None  # None: 0.1 for a folder of class folders; existing test/ folders are kept
    seed: int = DEFAULT_SEED
    copy: bool = False  # copy files instead of hardlinks (symlinks where hardlinks fail)
    max_size: int | None = None  # write downscaled copies whose longer side is at most this
    format: PrepareFormat = PrepareFormat.table
    tfrecord: bool = False  # write the images as TFRecord shards instead of class folders of links
    shard_size: int = DEFAULT_SHARD_SIZE  # bytes of images per shard (about)


@dataclass
class ExampleConfig:
    test_fraction: float = 0.2  # prepare --example digits: held-out test/ split
    seed: int = DEFAULT_SEED


PREPARE_DEFAULTS = PrepareConfig()
DEFAULT_HOLDOUT = 0.1
