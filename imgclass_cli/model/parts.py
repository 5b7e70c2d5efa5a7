"""Typed handles on the parts of a classifier imgclass built, found by structure, not by layer names: the resize,
the preprocessing, the feature extractor and its last convolutional feature map, the pooling, the head (dropout,
dense layers, the classifier's logits) and the temperature softmax. One place knows this for every backbone and
both scratch CNNs (like keras-hub's `task.backbone` and `task.preprocessor`).

Every classifier imgclass builds is a chain: image -> Resizing -> preprocessing -> features -> pooling -> head ->
softmax. The features are a nested Keras model (a Keras Applications backbone, or the trunk of an earlier scratch
run) or inline layers (the scratch CNNs). Running the chain piece by piece (`features`, `logits_from_features`)
gives the gradient of a class score with respect to the feature map without building a new model across the
nested one (which fails with "Graph disconnected").
"""

from __future__ import annotations

from dataclasses import dataclass

from imgclass_cli._tf import keras
from imgclass_cli.errors import ImgclassError
from imgclass_cli.model.layers import BackbonePreprocess, TemperatureSoftmax


@dataclass(frozen=True)
class ClassifierParts:
    model: object
    resize: object  # keras.layers.Resizing: raw image -> the model's square input size
    preprocess: object  # Rescaling (scratch) or BackbonePreprocess (the backbone's preprocess_input)
    features: tuple  # the layers from the preprocessing to the last feature map, in order ((backbone,) if nested)
    backbone: object | None  # the nested feature extractor, or None when the features are inline layers
    pool: object  # GlobalAveragePooling2D, or Flatten (simple-cnn)
    head: tuple  # after the pool, up to the classifier: dropout, dense layers
    classifier: object  # the last Dense layer: logits
    softmax: object  # TemperatureSoftmax: probabilities = softmax(logits / T)

    @property
    def feature_map(self):
        """The last convolutional feature map (a symbolic 4-D tensor: batch, height, width, channels)."""
        return self.features[-1].output

    def features_of(self, images, training: bool = False):
        """Raw 0-255 images -> the last feature map (eager or inside a tf.function)."""
        x = self.preprocess(self.resize(images))
        for layer in self.features:
            x = layer(x, training=training)
        return x

    def logits_from_features(self, fmap, training: bool = False):
        """The last feature map -> logits (before the temperature)."""
        x = self.pool(fmap)
        for layer in self.head:
            x = layer(x, training=training)
        return self.classifier(x)

    @property
    def temperature(self) -> float:
        return float(self.softmax.temperature.numpy())

    def set_temperature(self, value: float) -> None:
        self.softmax.temperature.assign(float(value))


def _chain(model) -> list:
    """The model's layers in order, checking that each takes the previous one's output (a chain)."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras().layers.InputLayer)]
    for before, layer in zip(layers, layers[1:]):
        if isinstance(before, keras().Model) or isinstance(layer, keras().Model):
            continue  # a nested model's own input and output are not the tensors it was called on here
        inputs = layer.input if isinstance(layer.input, list) else [layer.input]
        if len(inputs) != 1 or inputs[0] is not before.output:
            raise ImgclassError(f"{model.name}: not a classifier built by imgclass (layer {layer.name} does not follow "
                                f"{before.name})")
    return layers


def parts(model) -> ClassifierParts:
    """The parts of a classifier built (or loaded) by imgclass; an ImgclassError for any other model."""
    L = keras().layers
    layers = _chain(model)

    def index(kinds, last=False) -> int:
        found = [i for i, layer in enumerate(layers) if isinstance(layer, kinds)]
        if not found:
            raise ImgclassError(f"{model.name}: not a classifier built by imgclass (no {kinds} layer)")
        return found[-1] if last else found[0]

    r = index(L.Resizing)
    p = r + 1
    if p >= len(layers) or not isinstance(layers[p], (L.Rescaling, BackbonePreprocess)):
        raise ImgclassError(f"{model.name}: not a classifier built by imgclass (no preprocessing after the resize)")
    pool = index((L.GlobalAveragePooling2D, L.Flatten), last=True)
    features = tuple(layers[p + 1:pool])
    if not features or len(features[-1].output.shape) != 4:
        raise ImgclassError(f"{model.name}: has no convolutional feature map before its pooling layer")
    softmax = layers[-1]
    if not isinstance(softmax, TemperatureSoftmax) or not isinstance(layers[-2], L.Dense):
        raise ImgclassError(f"{model.name}: not a classifier built by imgclass (no classifier and softmax at the end)")
    nested = len(features) == 1 and isinstance(features[0], keras().Model)
    return ClassifierParts(model, layers[r], layers[p], features, features[0] if nested else None, layers[pool],
                           tuple(layers[pool + 1:-2]), layers[-2], softmax)
