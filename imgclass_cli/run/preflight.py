"""What train and finetune can check in a second, before TensorFlow is imported or an image decoded: the data
folder, --out, the architecture and image size, --weights, and the defaults that come from a source run."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable

from imgclass_cli.config import FINETUNE_DEFAULTS, MAX_SHARD_SIZE, MIN_SHARD_SIZE, SCRATCH_ARCHS, Strategy, TrainConfig
from imgclass_cli.data import dataset, folders
from imgclass_cli.errors import ImgclassError
from imgclass_cli.model import backbones
from imgclass_cli.run import distribute, rundir

FROZEN_RANDOM_WARNING = (
    "--weights none with nothing unfrozen trains only a head on a frozen, random backbone, whose features carry "
    "almost nothing (measured on ants/bees: validation 0.54, every prediction the same class). To train every "
    "layer from scratch use `imgclass train DATA --arch {arch}`; to start from pretrained weights use --weights "
    "imagenet or a weights file; or add --unfreeze N"
)


def check_train(config: TrainConfig, force: bool = False, warn: Callable[[str], None] = lambda m: None) -> TrainConfig:
    """A copy of config with the source run's image size filled in; raises ImgclassError for what cannot work.
    A --resume run is checked against its own saved options later (they replace these)."""
    config = dataclasses.replace(config)
    distribute.check(config.strategy)
    if config.strategy != Strategy.default:
        distribute.collective_timeout()
    if config.data:
        dataset.check_root(config.data)
        if not dataset.is_prepared(config.data):
            folders.check_has_folders(config.data)
    if config.resume:
        return config
    if config.out:
        rundir.check_out(config.out, force)
    weights = config.weights
    source = None
    if weights not in ("none", "imagenet") and os.path.isdir(weights):
        source = rundir.read_info(weights)  # a run directory with a complete model.keras, or a clear error
        if config.command == "finetune":
            # The backbone is the source run's network, whatever its architecture (a scratch cnn included).
            if config.arch not in (source.config.arch, FINETUNE_DEFAULTS.arch):
                raise ImgclassError(f"--backbone {config.arch}: {weights} is a {source.config.arch} run; leave out "
                                    f"--backbone (the run's network is the backbone)")
            config.arch = source.config.arch
    arch = config.arch
    if config.image_size is not None:
        backbones.check_image_size(arch, config.image_size)
    if arch in SCRATCH_ARCHS:
        if weights != "none" and not (source is not None and config.command == "finetune"):
            raise ImgclassError(f"--weights {weights}: the scratch architecture {arch} has no pretrained weights")
    if weights in ("none", "imagenet"):
        if weights == "none" and config.command == "finetune" and not _unfreezes(config):
            warn(FROZEN_RANDOM_WARNING.format(arch=arch))
        return config
    if not os.path.exists(weights):
        raise ImgclassError(f"--weights {weights}: no such file or run directory; pass imagenet, none, a weights "
                            f"file for {arch} or the --out folder of an earlier run")
    if source is not None:
        if config.image_size is None:
            config.image_size = source.image_size
        elif config.image_size != source.image_size and arch in SCRATCH_ARCHS:
            raise ImgclassError(f"--image-size {config.image_size}: a {arch} backbone from {weights} runs at its own "
                                f"size {source.image_size}; leave out --image-size")
        elif config.image_size != source.image_size:
            warn(f"--image-size {config.image_size}: the backbone of {weights} was trained at {source.image_size} px; "
                 f"its features usually transfer worse at another size (leave out --image-size to use "
                 f"{source.image_size})")
    return config


def _unfreezes(config: TrainConfig) -> bool:
    return bool(config.unfreeze or config.unfreeze_from) and config.finetune_epochs > 0


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str, option: str = "--shard-size") -> int:
    """'100MB', '64 MiB', '250000' -> bytes (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).upper() if m else None
    size = int(float(m.group(1)) * _UNITS[unit]) if m and unit in _UNITS else None
    if size is None or not MIN_SHARD_SIZE <= size <= MAX_SHARD_SIZE:
        raise ImgclassError(f"Invalid value for '{option}': must be a size between {MIN_SHARD_SIZE // 1000} KB and "
                            f"{MAX_SHARD_SIZE // 10**9} GB, e.g. 100MB, 512KB or 1GB; got {text}")
    return size


def parse_shard(text: str) -> tuple[int, int]:
    """--shard I/N: part I (1-based, like CI matrix indices) of N; 1 <= I <= N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    i, n = (int(m.group(1)), int(m.group(2))) if m else (None, None)
    if m is None or not 1 <= i <= n:
        hint = " (I counts from 1: a 0-based index k is --shard k+1/N)" if i == 0 else ""
        raise ImgclassError(f"Invalid value for '--shard': must be I/N with 1 <= I <= N, e.g. 2/4 for the second of "
                            f"4 parts{hint}; got {text}")
    return i, n
