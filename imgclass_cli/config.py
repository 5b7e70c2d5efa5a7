"""Dataclasses holding every option and its default: the single source of truth for CLI help and core."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum


class Augment(str, Enum):
    none = "none"
    light = "light"
    strong = "strong"


class EvalFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


class PredictFormat(str, Enum):
    table = "table"
    csv = "csv"
    jsonl = "jsonl"


class PrepareFormat(str, Enum):
    table = "table"
    json = "json"


class OnBadImage(str, Enum):
    skip = "skip"
    fail = "fail"


class Example(str, Enum):
    digits = "digits"


SCRATCH_ARCHS = ("cnn", "simple-cnn")
DEFAULT_SCRATCH_IMAGE_SIZE = 128


@dataclass
class TrainConfig:
    """Everything `train` and `finetune` need; saved as config.json in the run directory."""

    command: str = "train"
    data: str = ""
    arch: str = "cnn"  # train: cnn | simple-cnn | a backbone name; finetune: a backbone name
    weights: str = "none"  # imagenet | none | PATH (finetune defaults to imagenet)
    image_size: int | None = None  # None: the backbone's default size, or 128 for scratch CNNs
    batch_size: int = 32
    epochs: int = 10
    learning_rate: float = 1e-3
    augment: Augment = Augment.light
    val_split: float = 0.2
    dropout: float = 0.2
    seed: int = 42
    on_bad_image: OnBadImage = OnBadImage.skip
    out: str | None = None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: (v.value if isinstance(v, Enum) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in names})
        cfg.augment = Augment(cfg.augment)
        cfg.on_bad_image = OnBadImage(cfg.on_bad_image)
        return cfg


TRAIN_DEFAULTS = TrainConfig()
FINETUNE_DEFAULTS = TrainConfig(command="finetune", arch="mobilenetv2", weights="imagenet", epochs=5)


@dataclass
class PredictConfig:
    top_k: int = 1
    batch_size: int = 32
    format: PredictFormat = PredictFormat.table
    strict: bool = False


PREDICT_DEFAULTS = PredictConfig()


@dataclass
class EvalConfig:
    batch_size: int = 32
    format: EvalFormat = EvalFormat.table
    split: str | None = None  # for a train/val/test folder: test if present, else val


EVAL_DEFAULTS = EvalConfig()

# Estimated decoded-image bytes above which the pipeline streams from disk instead of caching in memory.
MEMORY_CACHE_LIMIT_BYTES = 2 * 1024**3

# The keys of metrics.json that the README documents and a test pins.
METRIC_KEYS = (
    "accuracy",
    "balanced_accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "precision_weighted",
    "recall_weighted",
    "f1_weighted",
)


@dataclass
class RunInfo:
    """What a run directory holds besides the model (see rundir.py)."""

    path: str
    class_names: list[str]
    config: TrainConfig
    image_size: int
    extra: dict = field(default_factory=dict)
