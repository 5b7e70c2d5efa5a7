"""Classifier construction, fine-tuning phases (which layers train), the backbone split of the feature cache."""

from __future__ import annotations

import numpy as np
import pytest

from imgclass_cli.errors import ImgclassError


@pytest.fixture(scope="module")
def mnv2():
    from imgclass_cli.model import build as models

    return models.build_classifier("mobilenetv2", 3, 32, weights="none", dropout=0.0, trainable_backbone=False)


def _trainable_backbone_layers(model):
    return [layer.name for layer in model.get_layer("backbone").layers if layer.trainable and layer.weights]


def test_phase1_trains_only_the_head(mnv2):
    from imgclass_cli.model import phases

    phases.set_phase(mnv2, 1)
    assert _trainable_backbone_layers(mnv2) == []
    assert {v.path.split("/")[0] for v in mnv2.trainable_variables} == {"classifier"}


def test_phase2_unfreezes_the_top_but_not_batchnorm(mnv2):
    from imgclass_cli.model import phases

    base = mnv2.get_layer("backbone")
    layers = [layer for layer in base.layers if layer.__class__.__name__ != "InputLayer"]
    trained = phases.set_phase(mnv2, 2, unfreeze=12)
    top = layers[-12:]
    expected = [layer.name for layer in top if layer.weights and not phases.is_batchnorm(layer)]
    assert _trainable_backbone_layers(mnv2) == expected and expected
    assert [layer.name for layer in trained if layer.weights] == expected
    assert any(phases.is_batchnorm(layer) for layer in top)  # BatchNorm inside the range ...
    assert not any(layer.trainable for layer in base.layers if phases.is_batchnorm(layer))  # ... stays frozen
    assert all(not layer.trainable for layer in layers[:-12])

    # BatchNorm statistics do not move in a phase-2 training step (frozen BN runs in inference mode).
    bn = next(layer for layer in top if phases.is_batchnorm(layer))
    before = [w.copy() for w in bn.get_weights()]
    trained_vars = {v.path.split("/")[0] for v in mnv2.trainable_variables}
    assert trained_vars == set(expected) | {"classifier"}
    mnv2.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    mnv2.train_on_batch(x, np.arange(8) % 3)
    assert all(np.array_equal(a, b) for a, b in zip(before, bn.get_weights()))

    phases.set_phase(mnv2, 2, unfreeze_from="block_16_project")
    names = _trainable_backbone_layers(mnv2)
    assert names[0] == "block_16_project" and "block_15_project" not in names
    phases.set_phase(mnv2, 1)
    assert _trainable_backbone_layers(mnv2) == []


def test_unfreeze_errors_are_clear(mnv2):
    from imgclass_cli.model import phases

    with pytest.raises(ImgclassError, match="did you mean block_16_project"):
        phases.set_phase(mnv2, 2, unfreeze_from="block_16_projct")
    with pytest.raises(ImgclassError, match="has only"):
        phases.set_phase(mnv2, 2, unfreeze=10_000)
    phases.set_phase(mnv2, 1)


def test_split_backbone_is_exact_across_a_residual_cut(mnv2):
    from imgclass_cli.model import feature_cache, phases

    base = mnv2.get_layer("backbone")
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
    expected = base(x, training=False).numpy()
    # block_15_expand and block_15_add both read block_14_add's output: one tensor crosses the cut.
    # Cutting at block_15_add itself, two tensors cross it (block_14_add and block_15_project_BN).
    for first, n_cut in (("block_15_expand", 1), ("block_15_add", 2), ("block_15_expand", 1)):
        top_layers = phases.unfrozen_layers(base, unfreeze_from=first)
        trunk, top = feature_cache.split_backbone(base, top_layers)  # the third split: a model split before
        assert len(trunk.outputs) == n_cut, first
        feature_cache.head_model(mnv2, [tuple(t.shape[1:]) for t in trunk.outputs], top)  # adds nodes to the layers
        np.testing.assert_allclose(top(trunk(x, training=False), training=False).numpy(), expected,
                                   rtol=1e-5, atol=1e-5)
        # Layers are shared, not copied: the cached path trains the backbone's own weights.
        assert top.get_layer("Conv_1") is base.get_layer("Conv_1")


def test_scratch_image_size_follows_small_images():
    from imgclass_cli.model.build import resolve_image_size

    assert resolve_image_size("cnn", None, native=28) == 28  # Fashion-MNIST trains at its own size
    assert resolve_image_size("simple-cnn", None, native=20) == 32  # the seed net needs 32 px
    assert resolve_image_size("cnn", None, native=500) == 128
    assert resolve_image_size("cnn", 64, native=28) == 64
    assert resolve_image_size("mobilenetv2", None, native=28) == 224


def test_label_smoothing_loss_matches_the_formula():
    from imgclass_cli.model.build import SmoothedSparseCrossentropy

    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype="float32")
    y = np.array([0, 2])
    loss = float(SmoothedSparseCrossentropy(3, 0.1)(y, p))
    target = np.eye(3)[y] * 0.9 + 0.1 / 3
    assert loss == pytest.approx(float(np.mean(-(target * np.log(p)).sum(1))), rel=1e-5)


def test_backbone_from_scratch_gets_a_fast_batchnorm_momentum():
    """Keras Applications' 0.99-0.999 left the moving statistics at their start after a short scratch run."""
    from imgclass_cli.model import build as models

    model = models.build_classifier("mobilenetv2", 3, 32, weights="none")
    bns = [layer for layer in model.get_layer("backbone").layers if layer.__class__.__name__ == "BatchNormalization"]
    assert bns and all(layer.momentum <= 0.9 for layer in bns)


def test_the_traced_forward_is_made_once_per_model_matches_it_and_does_not_keep_it_alive():
    import gc
    import weakref

    from imgclass_cli._tf import inference_fn
    from imgclass_cli.model.build import build_classifier

    model = build_classifier("cnn", 3, 16)
    forward = inference_fn(model)
    assert inference_fn(model) is forward  # the custom loop validates every epoch: traced once, not per epoch
    x = np.random.default_rng(0).uniform(0, 255, (5, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(forward(x).numpy(), model(x, training=False).numpy(), rtol=1e-5, atol=1e-6)
    gone = weakref.ref(model)
    del model, forward
    gc.collect()
    assert gone() is None
