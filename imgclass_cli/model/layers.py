"""imgclass's own Keras layers and loss, registered for saving: a saved model takes raw 0-255 RGB and gives
probabilities with no code outside Keras' safe mode."""

from __future__ import annotations

from imgclass_cli._tf import keras
from imgclass_cli.model.backbones import get_backbone

_keras = keras()


@_keras.saving.register_keras_serializable(package="imgclass")
class BackbonePreprocess(_keras.layers.Layer):
    """The backbone's own preprocess_input as a serializable layer, so saved models take raw 0-255 RGB."""

    def __init__(self, backbone: str, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone

    def call(self, x):
        return get_backbone(self.backbone).preprocess(x)

    def get_config(self):
        return {**super().get_config(), "backbone": self.backbone}


@_keras.saving.register_keras_serializable(package="imgclass")
class SmoothedSparseCrossentropy(_keras.losses.Loss):
    """Cross-entropy on integer labels with label smoothing (Keras' sparse loss has no label_smoothing); labels of
    shape (batch, num_classes) are taken as they are: mixed one-hot labels (MixUp, CutMix)."""

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, name="smoothed_sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        ops = _keras.ops
        if len(y_true.shape) == 2 and y_true.shape[-1] == self.num_classes and self.num_classes > 1:
            y = ops.cast(y_true, y_pred.dtype)
        else:
            y = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), self.num_classes)
        return _keras.losses.categorical_crossentropy(y, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {"num_classes": self.num_classes, "label_smoothing": self.label_smoothing, "name": self.name}


@_keras.saving.register_keras_serializable(package="imgclass")
class TemperatureSoftmax(_keras.layers.Layer):
    """probabilities = softmax(logits / T): the classifier's output. T is 1 while training; calibration (temperature
    scaling) sets it from the validation split, and it is saved with the weights, so every export gives the same
    calibrated probabilities."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.temperature = self.add_weight(name="temperature", shape=(), initializer="ones", trainable=False)

    def call(self, logits):
        return _keras.ops.softmax(logits / _keras.ops.cast(self.temperature, logits.dtype), axis=-1)


CUSTOM_OBJECTS = {"imgclass>BackbonePreprocess": BackbonePreprocess,
                  "imgclass>SmoothedSparseCrossentropy": SmoothedSparseCrossentropy,
                  "imgclass>TemperatureSoftmax": TemperatureSoftmax}
