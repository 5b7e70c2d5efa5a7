"""Registry of Keras Applications backbones: name -> constructor, preprocess_input module, input sizes."""

from __future__ import annotations

import contextlib
import difflib
import sys
import warnings
from dataclasses import dataclass

from imgclass_cli.config import MIN_IMAGE_SIZE, SCRATCH_ARCHS, SCRATCH_MIN_SIZE
from imgclass_cli.errors import ImgclassError


@dataclass(frozen=True)
class BackboneSpec:
    name: str  # the CLI name: lowercase, no separators
    constructor: str  # attribute of keras.applications
    module: str  # keras.applications.<module>.preprocess_input does the backbone's own preprocessing
    default_size: int
    min_size: int = 32

    def build(self, image_size: int, weights):
        from imgclass_cli._tf import keras

        ctor = getattr(keras().applications, self.constructor)
        # Keras prints "Downloading data from https://..." on stdout: stdout is for data only.
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            if weights is None:  # the "weights for 224 px will be loaded" notice is moot without weights
                warnings.simplefilter("ignore", UserWarning)
            return ctor(include_top=False, weights=weights, input_shape=(image_size, image_size, 3))

    def preprocess(self, x):
        from imgclass_cli._tf import keras

        return getattr(keras().applications, self.module).preprocess_input(x)


def _table() -> dict[str, BackboneSpec]:
    rows = [
        ("vgg16", "VGG16", "vgg16", 224),
        ("vgg19", "VGG19", "vgg19", 224),
        ("resnet50", "ResNet50", "resnet", 224),
        ("resnet101", "ResNet101", "resnet", 224),
        ("resnet152", "ResNet152", "resnet", 224),
        ("resnet50v2", "ResNet50V2", "resnet_v2", 224),
        ("resnet101v2", "ResNet101V2", "resnet_v2", 224),
        ("resnet152v2", "ResNet152V2", "resnet_v2", 224),
        ("mobilenet", "MobileNet", "mobilenet", 224),
        ("mobilenetv2", "MobileNetV2", "mobilenet_v2", 224),
        ("mobilenetv3small", "MobileNetV3Small", "mobilenet_v3", 224),
        ("mobilenetv3large", "MobileNetV3Large", "mobilenet_v3", 224),
        ("densenet121", "DenseNet121", "densenet", 224),
        ("densenet169", "DenseNet169", "densenet", 224),
        ("densenet201", "DenseNet201", "densenet", 224),
        ("inceptionv3", "InceptionV3", "inception_v3", 299, 75),
        ("inceptionresnetv2", "InceptionResNetV2", "inception_resnet_v2", 299, 75),
        ("xception", "Xception", "xception", 299, 71),
        ("nasnetmobile", "NASNetMobile", "nasnet", 224),
        ("nasnetlarge", "NASNetLarge", "nasnet", 331),
        ("convnexttiny", "ConvNeXtTiny", "convnext", 224),
        ("convnextsmall", "ConvNeXtSmall", "convnext", 224),
        ("convnextbase", "ConvNeXtBase", "convnext", 224),
        ("convnextlarge", "ConvNeXtLarge", "convnext", 224),
        ("convnextxlarge", "ConvNeXtXLarge", "convnext", 224),
    ]
    for i, size in enumerate((224, 240, 260, 300, 380, 456, 528, 600)):
        rows.append((f"efficientnetb{i}", f"EfficientNetB{i}", "efficientnet", size))
    for suffix, size in (("b0", 224), ("b1", 240), ("b2", 260), ("b3", 300), ("s", 384), ("m", 480), ("l", 480)):
        rows.append((f"efficientnetv2{suffix}", f"EfficientNetV2{suffix.upper()}", "efficientnet_v2", size))
    return {r[0]: BackboneSpec(*r) for r in rows}


BACKBONES = _table()


def get_backbone(name: str) -> BackboneSpec:
    key = name.lower().replace("-", "").replace("_", "")
    if key in BACKBONES:
        return BACKBONES[key]
    close = difflib.get_close_matches(key, BACKBONES, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ImgclassError(f"unknown backbone '{name}'{hint}; run `imgclass backbones` to list them")


def train_arch(name: str) -> str:
    """train --arch: a scratch CNN or a backbone name; an unknown name suggests the closest of both."""
    if name in SCRATCH_ARCHS:
        return name
    key = name.lower().replace("-", "").replace("_", "")
    if key in BACKBONES:
        return BACKBONES[key].name
    choices = {a.replace("-", ""): a for a in SCRATCH_ARCHS}
    close = difflib.get_close_matches(key, [*choices, *BACKBONES], n=3, cutoff=0.6)
    names = [choices.get(c, c) for c in close]
    hint = f" (did you mean {' or '.join(names)}?)" if names else ""
    raise ImgclassError(f"unknown --arch '{name}'{hint}; use {', '.join(SCRATCH_ARCHS)} or a backbone name "
                        "(`imgclass backbones` lists them)")


def min_image_size(arch: str) -> int:
    """The smallest --image-size an architecture takes (no TensorFlow needed: the CLI checks it first)."""
    if arch in SCRATCH_MIN_SIZE:
        return SCRATCH_MIN_SIZE[arch]
    return max(MIN_IMAGE_SIZE, get_backbone(arch).min_size) if is_backbone(arch) else MIN_IMAGE_SIZE


def check_image_size(arch: str, image_size: int) -> None:
    minimum = min_image_size(arch)
    if image_size < minimum:
        raise ImgclassError(f"--image-size {image_size} is too small for {arch}; use at least {minimum}")


def is_backbone(name: str) -> bool:
    return name.lower().replace("-", "").replace("_", "") in BACKBONES
