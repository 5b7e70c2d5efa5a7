"""What train and finetune can check in a second, before TensorFlow is imported or an image decoded: the data
folder, --out, the architecture and image size, --weights, and the defaults that come from a source run."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from imgclass_cli.config import SCRATCH_ARCHS, Strategy, TrainConfig
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


def normalized_arch(config: TrainConfig) -> TrainConfig:
    """train --arch and finetune --backbone as the one name the core knows (`MobileNet_V2` -> mobilenetv2); an
    unknown name is an error suggesting the closest."""
    name = backbones.train_arch(config.arch) if config.command == "train" else backbones.get_backbone(config.arch).name
    return dataclasses.replace(config, arch=name)


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
    if config.exclude:
        from imgclass_cli.data import exclude

        exclude.read(config.exclude, config.data or ".")  # a missing or unreadable list fails here, in a second
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
            if config.arch not in (source.config.arch, TrainConfig.defaults("finetune").arch):
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
