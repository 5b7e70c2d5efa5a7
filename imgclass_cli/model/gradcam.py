"""Grad-CAM (Selvaraju et al. 2017): where a classifier imgclass built looks when it scores a class. The gradient of
the class's logit with respect to the last convolutional feature map, averaged over the map's positions, weighs its
channels; the ReLU of the weighted sum is the heatmap, scaled to 0..1 and stretched back to the input image's size.

The logit, not the probability: on a saturated softmax the probability's gradient vanishes and the map is noise.
The gradient path runs the classifier piece by piece (model/parts.py), so it works across the nested Keras
Applications backbones, where a new keras.Model from the inner feature map fails with "Graph disconnected".
"""

from __future__ import annotations

import numpy as np

from imgclass_cli._tf import tf
from imgclass_cli.errors import ImgclassError
from imgclass_cli.model.parts import parts

PREDICTED = -1  # as a class index: explain the class the model predicts


class GradCam:
    """Grad-CAM of one model, traced once per model: `maps(images, classes)` on batches of the model's input."""

    def __init__(self, model):
        try:
            self.parts = parts(model)
        except ImgclassError as e:  # no 4-D feature map before the pooling, or not a classifier imgclass built
            why = e.message.removeprefix(f"{model.name}: ")
            raise ImgclassError(f"Grad-CAM cannot explain {model.name}: {why}") from None
        self.image_size = int(self.parts.resize.height)
        t = tf()
        size = self.image_size
        # No autograph: the function has no Python control flow on tensors, and tracing is 5x faster without it.
        self._fn = t.function(self._maps, autograph=False,
                              input_signature=[t.TensorSpec([None, size, size, 3], t.float32),
                                               t.TensorSpec([None], t.int32)])  # traced once

    def _maps(self, images, classes):
        t = tf()
        p = self.parts
        fmap = p.features_of(images)
        with t.GradientTape() as tape:
            tape.watch(fmap)
            logits = p.logits_from_features(fmap)
            chosen = t.where(classes < 0, t.argmax(logits, axis=1, output_type=t.int32), classes)
            score = t.gather(logits, chosen, axis=1, batch_dims=1)
        grads = tape.gradient(score, fmap)  # each image's score depends on its own map only (inference mode)
        weights = t.reduce_mean(grads, axis=[1, 2])  # (n, channels): the channel's importance for the class
        cam = t.nn.relu(t.einsum("nhwc,nc->nhw", fmap, weights))
        peak = t.reduce_max(cam, axis=[1, 2], keepdims=True)
        cam = t.math.divide_no_nan(cam, peak)  # 0..1; a map with no positive evidence stays 0
        return cam, p.softmax(logits), chosen

    def maps(self, images, classes=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """images: (n, S, S, 3) 0-255 at the model's input size (decoded like predict); classes: n class indices,
        or PREDICTED (the default) for the predicted class. Returns (heatmaps (n, h, w) 0..1 at the feature map's
        resolution, probabilities (n, k) as the model gives them, the class explained per image)."""
        images = np.asarray(images, dtype=np.float32)
        n = len(images)
        if classes is None:
            classes = np.full(n, PREDICTED)
        classes = np.broadcast_to(np.asarray(classes, dtype=np.int32), (n,))
        cam, probs, chosen = self._fn(tf().constant(images), tf().constant(classes))
        return cam.numpy(), probs.numpy(), chosen.numpy()


def upsample(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """A feature-map heatmap stretched to an image of height x width, float32 0..1 (peak 1 unless all 0).

    The model's Resizing stretched the image to its square input, so stretching the map back to the image's own
    height and width (each axis by its own factor) puts every cell over the pixels it saw. Bilinear, with pixel
    centres aligned like the resize."""
    t = tf()
    up = t.image.resize(t.constant(np.asarray(cam, np.float32)[..., None]), [int(height), int(width)],
                        method="bilinear").numpy()[..., 0]
    up = np.clip(up, 0.0, None)
    top = float(up.max()) if up.size else 0.0
    return (up / top if top > 0 else up).astype(np.float32)


def peak(cam: np.ndarray, height: int, width: int) -> list[int]:
    """[row, col] in an image of height x width of the centre of the heatmap's strongest cell (the first one in
    reading order). The stretched map's maximum is there: bilinear values between cell centres never exceed them,
    and toward the border they stay flat, where the first maximum pixel would be a corner."""
    fh, fw = cam.shape
    i, j = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return [min(height - 1, int((i + 0.5) * height / fh)), min(width - 1, int((j + 0.5) * width / fw))]
