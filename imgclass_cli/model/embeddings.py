"""Image embeddings for the data checks: the penultimate layer of a classifier imgclass built (the input of its
classifier: pooled features after the head's dense layers), or a frozen Keras Applications backbone, pooled."""

from __future__ import annotations

from dataclasses import dataclass

from imgclass_cli._tf import keras, tf
from imgclass_cli.model.parts import parts


@dataclass
class Embedder:
    fn: object  # raw 0-255 images (batch, any, any, 3) -> (batch, dim) float32, a tf.function
    dim: int
    image_size: int
    source: str  # what the embeddings are, for audit.json: "run RUN", "backbone NAME (weights W)"


def penultimate(model, image_size: int, source: str, policy: str = "float32") -> Embedder:
    """The input of the classifier of `model` (any classifier imgclass built), at inference; the features compute
    in `policy` (model.build.apply_precision), the embedding itself is float32."""
    from imgclass_cli.model.build import apply_precision

    apply_precision(model, policy)
    p = parts(model)
    extractor = keras().Model(model.inputs, p.classifier.input)

    @tf().function(reduce_retracing=True)
    def run(x):
        return extractor(x, training=False)

    return Embedder(run, int(p.classifier.input.shape[-1]), image_size, source)


def from_backbone(name: str, weights: str, image_size: int | None, policy: str = "float32") -> Embedder:
    """A frozen Keras Applications backbone with its own preprocessing, pooled by global average pooling."""
    from imgclass_cli.model import build
    from imgclass_cli.model.backbones import get_backbone

    spec = get_backbone(name)
    size = image_size or spec.default_size
    model = build.build_classifier(spec.name, 2, size, weights=weights, dropout=0.0, trainable_backbone=False)
    return penultimate(model, size, f"backbone {spec.name} (weights {weights})", policy)
