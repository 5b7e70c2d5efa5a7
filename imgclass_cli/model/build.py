"""Build classifiers: scratch CNNs and Keras Applications backbone + softmax head, preprocessing inside."""

from __future__ import annotations

import os

from imgclass_cli import files
from imgclass_cli._tf import keras, tf
from imgclass_cli.config import (
    DEFAULT_SCRATCH_IMAGE_SIZE,
    RESIZE_ANTIALIAS,
    RESIZE_INTERPOLATION,
    SCRATCH_ARCHS,
    Resize,
    TrainConfig,
)
from imgclass_cli.errors import ImgclassError, first_line
from imgclass_cli.model.backbones import check_image_size, get_backbone, is_backbone, min_image_size  # noqa: F401
from imgclass_cli.model.layers import CUSTOM_OBJECTS, BackbonePreprocess, SmoothedSparseCrossentropy, TemperatureSoftmax  # noqa: F401

tf()
_keras = keras()

# Names of the parts, for people reading model.summary(); code finds the parts by structure (model/parts.py).
FLOAT32 = "float32"
RESIZE_LAYER, PREPROCESS_LAYER, BACKBONE_LAYER, POOL_LAYER = "resize", "preprocess", "backbone", "pool"
DROPOUT_LAYER, CLASSIFIER_LAYER, SOFTMAX_LAYER = "dropout", "classifier", "probabilities"


def _head(x, num_classes: int, dropout: float | None):
    """pooled features -> [dropout] -> logits -> softmax with temperature (float32 under any precision)."""
    L = _keras.layers
    if dropout is not None:
        x = L.Dropout(dropout, name=DROPOUT_LAYER)(x)
    x = L.Dense(num_classes, name=CLASSIFIER_LAYER, dtype=FLOAT32)(x)
    return TemperatureSoftmax(name=SOFTMAX_LAYER, dtype=FLOAT32)(x)


def keras_cache_dir() -> str:
    return os.path.join(os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras")), "models")


def resizing_layer(image_size: int, resize: Resize | str = Resize.squash, name: str = RESIZE_LAYER):
    """The model's Resizing layer for a --resize mode (data.imagefile.decode resizes the same way)."""
    mode = Resize(resize)
    return _keras.layers.Resizing(image_size, image_size, interpolation=RESIZE_INTERPOLATION,
                                  antialias=RESIZE_ANTIALIAS, crop_to_aspect_ratio=mode == Resize.crop,
                                  pad_to_aspect_ratio=mode == Resize.pad, name=name, dtype=FLOAT32)


def resize_mode(model) -> Resize:
    """The --resize mode a classifier's Resizing layer was built with."""
    from imgclass_cli.model.parts import parts

    layer = parts(model).resize
    return Resize.crop if layer.crop_to_aspect_ratio else Resize.pad if layer.pad_to_aspect_ratio else Resize.squash


def _input_and_resize(image_size: int, resize: Resize | str = Resize.squash):
    inputs = _keras.Input(shape=(None, None, 3), name="image")
    return inputs, resizing_layer(image_size, resize)(inputs)


def apply_precision(model, policy: str) -> None:
    """Compute the feature extractor of an imgclass classifier in `policy` (float32, mixed_bfloat16,
    mixed_float16): the resize, the preprocessing, the pooling, the head and the softmax stay float32, so the model
    takes and gives float32 whatever it computes in. Weights are float32 under every policy (mixed policies cast
    them per op), so the same weights serve every precision. Call it before the model is first traced."""
    from imgclass_cli.model.parts import parts

    p = parts(model)
    inner = {id(layer) for layer in p.features}

    def walk(layer, chosen):
        layer.dtype_policy = chosen
        if isinstance(layer, _keras.Model):
            for sub in layer.layers:
                walk(sub, chosen)

    model.dtype_policy = FLOAT32
    for layer in model.layers:
        walk(layer, policy if id(layer) in inner else FLOAT32)


def build_backbone(name: str, image_size: int, weights: str):
    """A Keras Applications network without its top. weights: imagenet | none | a weights file."""
    spec = get_backbone(name)
    check_image_size(spec.name, image_size)
    if weights == "imagenet":
        try:
            base = spec.build(image_size, "imagenet")
        except Exception as e:  # download failures surface as several exception types
            if "fetch" in str(e).lower() or "url" in str(e).lower() or isinstance(e, OSError):
                # Not "--weights none" as an equal choice: a frozen random backbone learns nothing.
                raise ImgclassError(
                    f"could not download the ImageNet weights of {spec.name} (offline?); pass --weights PATH with a "
                    f"local weights file or pre-fill the Keras cache {keras_cache_dir()}; without pretrained "
                    f"weights, train every layer from scratch with `imgclass train DATA --arch {spec.name}`"
                ) from e
            raise
    else:
        base = spec.build(image_size, None)
        if weights != "none":
            _load_backbone_weights(base, weights, spec.name)
    base.name = BACKBONE_LAYER
    return base


def _load_backbone_weights(base, path: str, name: str) -> None:
    if not os.path.exists(path):
        raise ImgclassError(f"--weights {path}: no such file; pass imagenet, none, or a weights file for {name}")
    if os.path.isdir(path):
        model_path = os.path.join(path, files.MODEL)
        if not os.path.exists(model_path):
            raise ImgclassError(f"--weights {path}: a folder must be an imgclass run directory (no model.keras in it)")
        source = load_model(model_path)
        from imgclass_cli.model.parts import parts

        src = parts(source).backbone
        if src is None:
            raise ImgclassError(f"--weights {path}: that run has no backbone (was it a scratch CNN?)")
        if src.count_params() != base.count_params():
            raise ImgclassError(f"--weights {path}: its backbone does not match {name} (different architecture)")
        base.set_weights(src.get_weights())
        return
    try:
        base.load_weights(path)
    except Exception as e:
        raise ImgclassError(f"--weights {path}: cannot load it into {name}: {first_line(e)}") from e


def build_classifier(arch: str, num_classes: int, image_size: int, weights: str = "none",
                     dropout: float = TrainConfig.dropout,
                     trainable_backbone: bool | None = None, resize: Resize | str = Resize.squash):
    """raw 0-255 image -> resize (squash, crop or pad) -> preprocessing -> network -> softmax over num_classes.

    Backbones are frozen and called with training=False (BatchNorm in inference mode) unless
    trainable_backbone is True (training a Keras Applications network from scratch). Built in float32;
    apply_precision sets what the network computes in.
    """
    L = _keras.layers
    if arch in SCRATCH_ARCHS:
        if weights == "none":
            return _scratch(arch, num_classes, image_size, dropout, resize)
        if os.path.isdir(weights) and trainable_backbone is False:
            return _on_scratch_run(arch, weights, num_classes, image_size, dropout, resize)
        raise ImgclassError(f"--weights {weights}: the scratch architecture {arch} has no pretrained weights")
    if not is_backbone(arch):
        get_backbone(arch)  # raises with a suggestion
    spec = get_backbone(arch)
    inputs, x = _input_and_resize(image_size, resize)
    x = BackbonePreprocess(spec.name, name=PREPROCESS_LAYER)(x)
    base = build_backbone(spec.name, image_size, weights)
    if trainable_backbone is None:
        trainable_backbone = weights == "none"
    base.trainable = trainable_backbone
    if trainable_backbone and weights == "none":
        # Keras Applications use BatchNorm momentum 0.99-0.999, tuned for ImageNet-length runs: after a few hundred
        # steps from scratch the moving statistics are still near their initial values, so validation collapsed
        # to one class (measured: mobilenetv2 from scratch, 0.97 train / 0.20 val accuracy). 0.9 settles quickly.
        for layer in base.layers:
            if isinstance(layer, L.BatchNormalization):
                layer.momentum = min(layer.momentum, 0.9)
    x = base(x, training=None if trainable_backbone else False)
    x = L.GlobalAveragePooling2D(name=POOL_LAYER)(x)
    return _keras.Model(inputs, _head(x, num_classes, dropout), name=f"imgclass_{spec.name}")


def _on_scratch_run(arch: str, run_path: str, num_classes: int, image_size: int, dropout: float, resize):
    """finetune --weights RUN of a scratch CNN: its layers up to its pooling (or flatten) layer, frozen and in
    inference mode, become the backbone; a new head on top. The scratch `cnn` learns features that transfer
    (bench/fmnist_transfer.py)."""
    from imgclass_cli.model.parts import parts

    L = _keras.layers
    source = load_model(os.path.join(run_path, files.MODEL))
    try:
        src = parts(source)
    except ImgclassError as e:
        raise ImgclassError(f"--weights {run_path}: {e.message}; was it written by another imgclass version?") from None
    start, cut = src.preprocess, src.pool
    source_size = int(start.output.shape[1])
    if source_size != image_size:
        raise ImgclassError(f"--image-size {image_size}: a {arch} backbone from {run_path} runs at its own size "
                            f"{source_size}; leave out --image-size")
    base = _keras.Model(start.output, cut.input, name=BACKBONE_LAYER)
    base.trainable = False
    inputs, x = _input_and_resize(image_size, resize)
    x = L.Rescaling(1.0 / 255, name=PREPROCESS_LAYER)(x)
    x = base(x, training=False)
    x = L.GlobalAveragePooling2D(name=POOL_LAYER)(x)
    return _keras.Model(inputs, _head(x, num_classes, dropout), name=f"imgclass_{arch.replace('-', '_')}_transfer")


def _scratch(arch: str, num_classes: int, image_size: int, dropout: float, resize):
    L = _keras.layers
    inputs, x = _input_and_resize(image_size, resize)
    x = L.Rescaling(1.0 / 255, name=PREPROCESS_LAYER)(x)
    if arch == "simple-cnn":
        # The seed project's network: three conv/pool blocks, flatten, dense.
        for filters in (32, 64, 128):
            x = L.Conv2D(filters, 3, activation="relu")(x)
            x = L.MaxPooling2D()(x)
        x = L.Flatten(name=POOL_LAYER)(x)
        x = L.Dense(128, activation="relu")(x)
        return _keras.Model(inputs, _head(x, num_classes, 0.5), name="imgclass_simple_cnn")
    else:
        # Default: four conv blocks doubling the width (32..256), pooling between them, global pooling instead of a
        # large dense layer. One conv per block, and no BatchNorm in the first (TensorFlow's CPU BatchNorm runs on
        # one core at full resolution), keep it within the seed recipe's time on 2 cores (docs/benchmarks.md).
        for i, filters in enumerate((32, 64, 128, 256)):
            if i == 0:
                x = L.Conv2D(filters, 3, padding="same", activation="relu")(x)
            else:
                x = L.Conv2D(filters, 3, padding="same", use_bias=False)(x)
                x = L.BatchNormalization(momentum=0.9)(x)  # settles within the first epoch on small data
                x = L.Activation("relu")(x)
            if i < 3:
                x = L.MaxPooling2D()(x)
        x = L.GlobalAveragePooling2D(name=POOL_LAYER)(x)
    return _keras.Model(inputs, _head(x, num_classes, dropout), name="imgclass_cnn")


def typical_size(paths: list, sample: int = 64, longer_side=None) -> int | None:
    """Median longer side of (an evenly spaced sample of) the images, read from their headers; None if unknown.
    longer_side(item): the size of an item known otherwise (records of a TFRecord folder), instead of a header."""
    from PIL import Image

    if not paths:
        return None
    step = max(1, len(paths) // sample)
    sizes = []
    for p in paths[::step][:sample]:
        if longer_side is not None:
            size = longer_side(p)
            if size:
                sizes.append(size)
            continue
        try:
            with Image.open(p) as im:
                sizes.append(max(im.size))
        except Exception:  # unreadable files are reported elsewhere
            continue
    return int(sorted(sizes)[len(sizes) // 2]) if sizes else None


def resolve_image_size(arch: str, image_size: int | None, native: int | None = None) -> int:
    """--image-size, else the backbone's default size; scratch CNNs train at the images' own size when they
    are smaller than the default (upsampling 28 px images to 128 px costs 20x the compute and adds no information),
    at least the architecture's minimum, else at the default."""
    if image_size is not None:
        check_image_size(arch, image_size)
        return image_size
    if is_backbone(arch):
        return get_backbone(arch).default_size
    if native is not None and native < DEFAULT_SCRATCH_IMAGE_SIZE:
        return max(native, min_image_size(arch))
    return DEFAULT_SCRATCH_IMAGE_SIZE


def load_model(path: str):
    """A model saved by imgclass, with its custom layers; Keras' safe mode stays on (no Lambda code runs)."""
    return _keras.models.load_model(path, compile=False, custom_objects=CUSTOM_OBJECTS)
