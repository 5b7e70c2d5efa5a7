"""model/gradcam.py: Grad-CAM looks where the class is decided (a small coloured patch at a random place on noise),
runs across a nested backbone, and says clearly when a model has no feature map to explain."""

from __future__ import annotations

import numpy as np
import pytest

from imgclass_cli.errors import ImgclassError

SIZE, PATCH = 32, 12
PATCH_COLOURS = np.array([(230, 30, 30), (30, 230, 30), (30, 30, 230)], np.float32)


def patch_images(n: int, seed: int):
    """(images, labels, top-left corners): grey noise with one PATCH x PATCH square whose colour is the class."""
    rng = np.random.default_rng(seed)
    x = np.clip(rng.normal(128, 40, (n, SIZE, SIZE, 3)), 0, 255).astype(np.float32)
    y = rng.integers(0, len(PATCH_COLOURS), n)
    corners = rng.integers(0, SIZE - PATCH + 1, (n, 2))
    for i, (r, c) in enumerate(corners):
        x[i, r:r + PATCH, c:c + PATCH] = PATCH_COLOURS[y[i]]
    return x, y, corners


@pytest.fixture(scope="module")
def patch_model():
    """The default scratch cnn trained for a few seconds on 200 patch images (100% test accuracy)."""
    from imgclass_cli._tf import keras
    from imgclass_cli.model import build

    K = keras()
    K.utils.set_random_seed(0)
    x, y, _ = patch_images(200, seed=0)
    model = build.build_classifier("cnn", len(PATCH_COLOURS), SIZE)
    model.compile(K.optimizers.Adam(0.003), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=6, verbose=0)
    return model


def hit_rate(peaks, corners) -> float:
    peaks = np.asarray(peaks)
    return float(((peaks >= corners) & (peaks < corners + PATCH)).all(axis=1).mean())


@pytest.mark.slow
def test_the_heatmap_peak_falls_on_the_patch_that_decides_the_class(patch_model):
    from imgclass_cli.model.gradcam import GradCam, peak
    from imgclass_cli.model.parts import parts

    x, y, corners = patch_images(60, seed=1)
    maps, probs, explained = GradCam(patch_model).maps(x)
    assert (probs.argmax(axis=1) == y).mean() >= 0.95 and (explained == y).mean() >= 0.95
    assert hit_rate([peak(m, SIZE, SIZE) for m in maps], corners) >= 0.7  # measured 0.85-0.95 over seeds
    # A random map falls on the patch by chance only ((12/32)^2 of the time, ~0.17 here).
    rng = np.random.default_rng(0)
    assert hit_rate([peak(rng.random(m.shape), SIZE, SIZE) for m in maps], corners) < 0.4
    # The class's logit, not its probability: a softmax saturated by a low temperature gives the same maps (the
    # probability's gradient would vanish there).
    softmax = parts(patch_model)
    softmax.set_temperature(0.01)
    try:
        np.testing.assert_allclose(GradCam(patch_model).maps(x)[0], maps, atol=1e-4)
    finally:
        softmax.set_temperature(1.0)
    # Another class's heatmap (--class) looks elsewhere: the patch is not its evidence.
    other = GradCam(patch_model).maps(x, (y + 1) % len(PATCH_COLOURS))[0]
    assert hit_rate([peak(m, SIZE, SIZE) for m in other], corners) < 0.5


def test_upsample_stretches_the_map_to_the_image_and_the_peak_is_in_its_pixels():
    from imgclass_cli.model.gradcam import peak, upsample

    cam = np.zeros((4, 4), np.float32)
    cam[1, 3] = 1.0
    heat = upsample(cam, 30, 80)  # a wide image the model saw squeezed into its square
    assert heat.shape == (30, 80) and heat.dtype == np.float32
    assert heat.min() >= 0 and heat.max() == pytest.approx(1.0)
    assert peak(cam, 30, 80) == [11, 70]  # the centre of cell (1, 3): rows 7.5-15, columns 60-80
    assert heat[11, 70] == pytest.approx(heat.max(), abs=0.05)
    assert upsample(np.zeros((2, 2), np.float32), 5, 5).max() == 0  # no evidence anywhere stays 0, not NaN


@pytest.mark.slow
def test_a_nested_backbone_with_random_weights_gives_a_finite_map_that_varies():
    from imgclass_cli._tf import keras
    from imgclass_cli.model import build
    from imgclass_cli.model.gradcam import GradCam

    keras().utils.set_random_seed(0)
    # 64 px: MobileNetV3Small's last feature map is 2x2 there (1x1, a constant map, at its 32 px minimum).
    # (Loaded from a run, as explain gets it, for all 40 backbones: bench/all_backbones_explain.py.)
    model = build.build_classifier("mobilenetv3small", 3, 64, weights="none", trainable_backbone=False)
    x = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    maps, probs, _ = GradCam(model).maps(x)
    assert maps.shape == (3, 2, 2) and np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert all(m.max() > m.min() for m in maps)
    np.testing.assert_allclose(probs, model(x, training=False), atol=1e-5)


def test_a_model_without_a_feature_map_is_one_clear_error():
    from imgclass_cli._tf import keras
    from imgclass_cli.model.gradcam import GradCam
    from imgclass_cli.model.layers import TemperatureSoftmax

    K = keras()
    inp = K.Input((None, None, 3))
    x = K.layers.Rescaling(1 / 255)(K.layers.Resizing(8, 8)(inp))
    model = K.Model(inp, TemperatureSoftmax()(K.layers.Dense(2)(K.layers.Flatten()(x))), name="flat")
    message = "^Grad-CAM cannot explain flat: has no convolutional feature map before its pooling layer$"
    with pytest.raises(ImgclassError, match=message):
        GradCam(model)
