"""Tiny generated image folders: each class has its own colour, so a small net learns it in a few epochs."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Tests that import TensorFlow themselves run it as imgclass does (imgclass_cli._tf turns oneDNN on before
# TensorFlow loads).
from imgclass_cli._tf import ONEDNN_DEFAULT  # noqa: E402

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", ONEDNN_DEFAULT)

COLOURS = {"blue": (40, 60, 210), "green": (40, 190, 60), "red": (210, 50, 40)}


def make_image(rng, colour, size=20) -> Image.Image:
    base = np.array(colour, dtype=np.float32)
    noise = rng.normal(0, 25, size=(size, size, 3))
    arr = np.clip(base + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def make_class_folders(root, per_class=16, seed=0, classes=COLOURS) -> str:
    rng = np.random.default_rng(seed)
    for name, colour in classes.items():
        d = os.path.join(root, name)
        os.makedirs(d, exist_ok=True)
        for i in range(per_class):
            img = make_image(rng, colour)
            # A mix of formats, as real folders have.
            if i % 3 == 0:
                img.save(os.path.join(d, f"img{i:03d}.jpg"), quality=95)
            else:
                img.save(os.path.join(d, f"img{i:03d}.png"))
    return str(root)


@pytest.fixture(scope="session")
def runner():
    return CliRunner()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return make_class_folders(tmp_path_factory.mktemp("data"), per_class=16, seed=0)


@pytest.fixture(scope="session")
def test_dir(tmp_path_factory):
    """Held-out images of the same classes (another seed)."""
    return make_class_folders(tmp_path_factory.mktemp("heldout"), per_class=6, seed=1)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, data_dir, runner):
    """One small scratch run shared by the evaluate and predict tests."""
    from imgclass_cli.cli import app

    out = str(tmp_path_factory.mktemp("runs") / "run")
    result = runner.invoke(app, ["train", data_dir, "--arch", "simple-cnn", "--image-size", "32", "--epochs", "12",
                                 "--augment", "none", "--out", out, "--quiet", "--learning-rate", "0.003"])
    assert result.exit_code == 0, result.output
    return out


def pytest_collection_modifyitems(config, items):
    """The slow tests first: under `pytest -n 2` the long ones then run side by side at the start instead of one
    of them starting last while the other worker idles (longest first keeps the workers' loads even)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def make_overlapping_class_folders(root, per_class=36, seed=0, spread=16.0) -> str:
    """Classes whose colours overlap (each image's colour is its class colour plus a random shift): a small net
    learns them well but not perfectly, so a validation split has the mistakes that calibration learns from."""
    rng = np.random.default_rng(seed)
    base = {"blue": (110, 110, 130), "green": (110, 130, 110), "red": (130, 110, 110)}
    for name, colour in base.items():
        d = os.path.join(root, name)
        os.makedirs(d, exist_ok=True)
        for i in range(per_class):
            shifted = np.asarray(colour, dtype=np.float32) + rng.normal(0, spread, size=3)
            make_image(rng, shifted).save(os.path.join(d, f"img{i:03d}.png"))
    return str(root)


@pytest.fixture(scope="session")
def calibrated_run(tmp_path_factory, runner):
    """(run, data): a small scratch run on overlapping colours with 51 validation images and some mistakes among
    them, so train fits a temperature (not 1) at the end."""
    from imgclass_cli.cli import app

    data = make_overlapping_class_folders(tmp_path_factory.mktemp("overlapping"), per_class=34, seed=0, spread=8.0)
    out = str(tmp_path_factory.mktemp("runs") / "calibrated")
    result = runner.invoke(app, ["train", data, "--arch", "simple-cnn", "--image-size", "32", "--epochs", "6",
                                 "--augment", "none", "--val", "0.5", "--out", out, "--learning-rate", "0.003"])
    assert result.exit_code == 0, result.output
    assert "calibration: temperature" in result.stderr, result.stderr
    return out, data
