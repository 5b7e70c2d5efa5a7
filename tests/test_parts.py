"""model/parts.py: one handle on a classifier's parts (preprocessing, feature extractor, last feature map, head), found
by structure for the scratch CNNs and the backbones. Every Keras Applications family `imgclass backbones` lists is
built once, by its smallest member (bench/all_backbones_parts.py runs all of them)."""

from __future__ import annotations

import numpy as np
import pytest

from imgclass_cli.errors import ImgclassError
from imgclass_cli.model import backbones, build
from imgclass_cli.model.parts import parts


def _smallest_of_each_family() -> list[str]:
    first = {}
    for name, spec in backbones.BACKBONES.items():  # the table lists each family smallest first
        first.setdefault(spec.module, name)
    return sorted(first.values())


FAMILIES = _smallest_of_each_family()


def test_every_listed_backbone_belongs_to_a_family_tested_here():
    assert {backbones.BACKBONES[n].module for n in FAMILIES} == {b.module for b in backbones.BACKBONES.values()}
    assert len(FAMILIES) == 15


def _check(model, size: int, nested: bool) -> None:
    from imgclass_cli._tf import keras

    p = parts(model)
    assert (p.backbone is not None) == nested
    assert len(p.feature_map.shape) == 4 and p.softmax is model.layers[-1]
    x = np.random.default_rng(0).uniform(0, 255, (2, size + 5, size - 3, 3)).astype("float32")  # any size in
    fmap = p.features_of(x)
    assert fmap.shape[0] == 2 and len(fmap.shape) == 4
    probs = keras().ops.softmax(p.logits_from_features(fmap) / p.temperature)
    np.testing.assert_allclose(np.asarray(probs), np.asarray(model(x, training=False)), atol=1e-5)
    p.set_temperature(2.5)
    assert p.temperature == 2.5 and parts(model).temperature == 2.5


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_parts_of_every_backbone_family(name):
    size = max(32, backbones.BACKBONES[name].min_size)
    _check(build.build_classifier(name, 3, size, weights="none", trainable_backbone=False), size, nested=True)


@pytest.mark.parametrize("arch", ["cnn", "simple-cnn"])
def test_parts_of_the_scratch_cnns(arch):
    model = build.build_classifier(arch, 4, 32)
    _check(model, 32, nested=False)
    p = parts(model)
    assert p.features[-1].__class__.__name__ == ("Activation" if arch == "cnn" else "MaxPooling2D")


def test_a_model_imgclass_did_not_build_is_one_clear_error():
    from imgclass_cli._tf import keras

    K = keras()
    inp = K.Input((8, 8, 3))
    model = K.Model(inp, K.layers.Dense(2, activation="softmax")(K.layers.Flatten()(inp)))
    with pytest.raises(ImgclassError, match="not a classifier built by imgclass"):
        parts(model)
