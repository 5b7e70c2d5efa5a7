"""--resize squash|crop|pad (the decoder and the model's Resizing layer agree, and the mode travels with the run and
its exports) and --augment strong (RandAugment, MixUp/CutMix labels, the printed list and augment_preview.png)."""

from __future__ import annotations

import csv
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from imgclass_cli.cli import app
from imgclass_cli.config import Augment, Resize


def _wide_image(path, w=36, h=20):
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    arr[:, : w // 5] = (250, 20, 20)  # a red band at the left edge: crop cuts it off, squash and pad keep it
    Image.fromarray(arr).save(path)
    return arr


@pytest.mark.parametrize("mode", list(Resize))
def test_the_decoder_resizes_like_the_models_resizing_layer(tmp_path, mode):
    from imgclass_cli._tf import tf
    from imgclass_cli.data.imagefile import decode
    from imgclass_cli.model.build import resizing_layer

    arr = _wide_image(tmp_path / "w.png")
    decoded = decode(tf().io.read_file(str(tmp_path / "w.png")), 16, 1, mode).numpy()
    layer = resizing_layer(16, mode)(arr[None].astype(np.float32))[0].numpy()
    assert np.abs(decoded.astype(float) - np.clip(np.round(layer), 0, 255)).max() == 0
    left_red = decoded[:, 0, 0].mean()
    assert (left_red > 200) == (mode == Resize.squash)  # crop cut the band off; pad put black bars there
    if mode == Resize.pad:
        assert decoded[0].max() == 0 or decoded[:, 0].max() == 0  # a black bar on the shorter side


@pytest.fixture(scope="module")
def strong_pad_run(runner, data_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("recipes") / "run")
    r = runner.invoke(app, ["train", data_dir, "--arch", "simple-cnn", "--image-size", "32", "--epochs", "1",
                            "--augment", "strong", "--resize", "pad", "--out", out])
    assert r.exit_code == 0, r.output
    return out, r


@pytest.mark.slow
def test_augment_strong_prints_what_it_applies_and_writes_a_preview(strong_pad_run):
    out, r = strong_pad_run
    assert "augmentation: horizontal flip, RandAugment (2 random operations a batch at strength 0.5), then per batch " \
           "MixUp (alpha 0.2) or CutMix (50% of batches each)" in r.stderr
    with Image.open(os.path.join(out, "augment_preview.png")) as im:
        assert im.format == "PNG" and im.size[0] > 400


@pytest.mark.slow
def test_the_resize_mode_is_recorded_and_baked_into_the_model(strong_pad_run, tmp_path, runner):
    from imgclass_cli.model.build import load_model, resize_mode

    out, _ = strong_pad_run
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["options"]["resize"] == "pad" and cfg["preprocessing"]["resize_mode"] == "pad"
    model = load_model(os.path.join(out, "model.keras"))
    assert resize_mode(model) == Resize.pad
    # predict decodes the pad way: the same probabilities as the saved model fed the raw, wide image.
    arr = _wide_image(tmp_path / "wide.png")
    r = runner.invoke(app, ["predict", out, str(tmp_path / "wide.png"), "-f", "jsonl", "--top-k", "3",
                            "--precision", "float32"])
    assert r.exit_code == 0, r.output
    got = {t["label"]: t["score"] for t in json.loads(r.stdout)["top_k"]}
    raw = model(arr[None].astype(np.float32)).numpy()[0]
    names = json.load(open(os.path.join(out, "labels.json")))
    assert max(abs(got[n] - raw[i]) for i, n in enumerate(names)) < 1e-3


@pytest.mark.slow
def test_an_export_of_a_pad_run_predicts_the_pad_way(strong_pad_run, tmp_path, runner):
    out, _ = strong_pad_run
    _wide_image(tmp_path / "wide.png")
    export = str(tmp_path / "tflite")
    r = runner.invoke(app, ["export", out, "--to", "tflite", "--out", export, "--parity", "9"])
    assert r.exit_code == 0, r.output
    assert json.load(open(os.path.join(export, "export.json")))["resize"] == "pad"
    rows = {}
    for target in (out, export):
        r = runner.invoke(app, ["predict", target, str(tmp_path / "wide.png"), "-f", "csv", "--precision", "float32"])
        rows[target] = next(csv.DictReader(io.StringIO(r.stdout)))
    assert rows[out]["label"] == rows[export]["label"]
    assert abs(float(rows[out]["confidence"]) - float(rows[export]["confidence"])) < 1e-4


def test_strong_augmentation_mixes_the_labels_of_a_batch(data_dir):
    from imgclass_cli.data import dataset, pipeline

    data = dataset.scan(data_dir, val_split=0.0, seed=0)
    spec = pipeline.PipelineSpec(16, 8, 0, Augment.strong, num_classes=3)
    x, y = next(iter(pipeline.build(data.splits["train"], spec, training=True)))
    assert x.shape == (8, 16, 16, 3) and y.shape == (8, 3)
    assert np.allclose(y.numpy().sum(1), 1.0)
    assert (y.numpy().max(1) < 1.0).any()  # at least one image of the batch carries two classes
    plain = pipeline.build(data.splits["train"], pipeline.PipelineSpec(16, 8, 0, Augment.strong), training=True)
    assert next(iter(plain))[1].shape == (8,)  # no class count: no mixing (the feature cache's one label an image)
