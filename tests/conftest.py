"""Tiny generated image folders: each class has its own colour, so a small net learns it in a few epochs."""

from __future__ import annotations

import json
import os
import re
import sys

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


@pytest.fixture(scope="session")
def exports(runner, trained_run, tmp_path_factory):
    """The shared run exported once per format, on first use: exports["savedmodel"], ["tflite-float16"],
    ["tflite-int8"] -> (export folder, the export command's CliRunner result)."""
    from imgclass_cli.cli import app

    root = tmp_path_factory.mktemp("exports")

    class Exports(dict):
        def __missing__(self, name):
            fmt, _, quantize = name.partition("-")
            args = ["export", trained_run, "--to", fmt, "--out", str(root / name), "--parity", "30"]
            if quantize:
                args += ["--quantize", quantize]
            self[name] = (str(root / name), runner.invoke(app, args))
            return self[name]

    return Exports()


# A Python process that runs several imgclass commands in turn, as a shell runs them one after another, with one
# TensorFlow start (3-5 s of CPU) for all of them. After each command's output, a line of its own gives its exit code.
EXIT_MARK = "@@imgclass exit "


def commands_script(setup: str = "") -> str:
    """The program for `python -c`; its one argument is a JSON list of argument lists. `setup` runs first."""
    return f"""
import json
import sys
{setup}
from imgclass_cli.cli import main
for argv in json.loads(sys.argv[1]):
    sys.argv = ["imgclass", *argv]
    try:
        main()
        code = 0
    except SystemExit as e:  # what the process would have exited with: None is 0, a message 1
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    sys.stdout.flush()
    print("\\n{EXIT_MARK}%s@@" % code, file=sys.stderr, flush=True)
"""


def commands_argv(commands: list[list[str]], setup: str = "") -> list[str]:
    return [sys.executable, "-c", commands_script(setup), json.dumps(commands)]


def split_commands(text: str, n: int) -> list[tuple[int, str]]:
    """(exit code, output) of each of the n commands run by commands_script, from its stderr (or its terminal)."""
    parts = re.split(re.escape(EXIT_MARK) + r"(\S+?)@@", text)
    results = [(int(code), out) for out, code in zip(parts[0::2], parts[1::2])]
    assert len(results) == n, f"{len(results)} of {n} commands finished:\n{text[-3000:]}"
    return results


# Tests that share a costly module or session fixture, by node id prefix -> group: one worker runs all of a group,
# so it builds the fixture once. (xdist's own xdist_group marks do nothing under pytest 9: xdist 3.8 renames the
# item through item._nodeid, which pytest 9 no longer reads.)
ONE_WORKER = {
    "tests/test_terminal.py::": "terminal",
    "tests/test_export.py::": "exports",
    "tests/test_trust_files.py::test_predict_runs_an_imgclass_savedmodel_export": "exports",
    "tests/test_training.py::test_timings_are_recorded_in_the_run_and_printed": "auto_run",
    "tests/test_training.py::test_train_without_epochs_runs_the_automatic_length_and_records_it": "auto_run",
    # Module fixtures of a few seconds each (two digit runs, a strong-augmentation run, prepared records, the fuzz
    # inputs, an ONNX export, an audit): built twice when their tests land on both workers.
    "tests/test_precision.py::test_a_bfloat16_run": "digit_runs",
    "tests/test_recipes.py::": "strong_pad_run",
    "tests/test_tfrecord.py::": "tfrecord_prepared",
    "tests/test_fuzz.py::": "fuzz_inputs",  # and test_fuzz_summary prints what the fuzz tests of its process found
    "tests/test_onnx.py::": "onnx_export",
    "tests/test_audit.py::": "audited",
    "tests/test_models.py::": "mnv2",
    "tests/test_distribute.py::test_mirrored_on_three": "three_replicas",
    "tests/test_distribute.py::test_the_default_batch_is_rounded": "three_replicas",
}


def pytest_collection_modifyitems(config, items):
    """The slow tests first, so no worker starts a long one last while the other idles."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: without the plugin, not called
def pytest_xdist_make_scheduler(config, log):
    """Under -n, the tests in the order collected (slow first), a few at a time to whichever worker is free, each
    group of ONE_WORKER as one unit. xdist's default (load) hands each worker a first chunk of consecutive tests, a
    quarter of its share: every slow test went to the first worker, one after another, while the other ran the
    rest."""
    if config.getvalue("dist") != "load":
        return None  # a --dist given on the command line wins
    from xdist.scheduler import LoadScopeScheduling

    class Scheduler(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return next((group for prefix, group in ONE_WORKER.items() if nodeid.startswith(prefix)), nodeid)

    config.option.loadscopereorder = False  # keep the collected order, not the largest groups first
    return Scheduler(config, log)


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
