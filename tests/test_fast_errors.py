"""Errors that need no data come back at once: before TensorFlow is imported or any image decoded (issue 10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import make_class_folders, make_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs each case through the CLI in one fresh process and records whether TensorFlow was imported by then.
PROBE = r"""
import json, sys
from typer.testing import CliRunner
from imgclass_cli.cli import app
out = []
for args in json.loads(sys.argv[1]):
    r = CliRunner().invoke(app, args)
    out.append({"args": args, "code": r.exit_code, "stderr": r.stderr, "tf": "tensorflow" in sys.modules})
print(json.dumps(out))
"""


def run_probe(cases: list[list[str]]) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.run([sys.executable, "-c", PROBE, json.dumps(cases)], capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_mistakes_fail_before_tensorflow_is_imported(tmp_path):
    data = make_class_folders(tmp_path / "data", per_class=2)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "precious.txt").write_text("keep")
    loose = tmp_path / "loose"
    loose.mkdir()
    import numpy as np

    rng = np.random.default_rng(0)
    for i in range(3):
        make_image(rng, (1, 2, 3)).save(loose / f"{i}.jpg")
    # A run directory whose model.keras was cut short (an interrupted copy), and one without its model.
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "config.json").write_text(json.dumps({"imgclass_version": "0", "image_size": 32, "options": {}}))
    (cut / "labels.json").write_text('["a", "b"]')
    (cut / "model.keras").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    nomodel = tmp_path / "nomodel"
    nomodel.mkdir()
    for f in ("config.json", "labels.json"):
        (nomodel / f).write_text((cut / f).read_text())

    cases = {
        "missing data": (["train", str(tmp_path / "nope")], "no such folder"),
        "existing --out": (["train", data, "--out", str(mine)], "--force"),
        "size for backbone": (["finetune", data, "--image-size", "16"], "--image-size 16 is too small for mobilenetv2"),
        "missing weights": (["finetune", data, "--weights", "/nope.h5"], "--weights /nope.h5: no such file"),
        "arch typo": (["train", data, "--arch", "cnnn"], "did you mean cnn?"),
        "loose images": (["train", str(loose)], f"3 image(s) directly in {loose}{os.sep}"),
        "truncated model": (["evaluate", str(cut), data], "not a complete .keras file"),
        "truncated source run": (["finetune", data, "--weights", str(cut)], "not a complete .keras file"),
        "missing model": (["evaluate", str(nomodel), data], "has no model.keras"),
    }
    results = run_probe([args for args, _ in cases.values()])
    for (name, (_, message)), r in zip(cases.items(), results):
        assert r["code"] == 2, (name, r)
        assert message in r["stderr"], (name, r["stderr"])
        assert not r["tf"], f"{name}: TensorFlow was imported before the error"
    assert (mine / "precious.txt").read_text() == "keep"


def _fake_run(folder, image_size: int, arch: str = "mobilenetv2"):
    """A run directory as preflight sees it (config, labels, a complete zip as model.keras), without TensorFlow."""
    import zipfile

    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"imgclass_version": "0", "image_size": image_size,
                                                    "options": {"arch": arch, "command": "train"}}))
    (folder / "labels.json").write_text('["a", "b"]')
    with zipfile.ZipFile(folder / "model.keras", "w") as z:
        z.writestr("config.json", "{}")
    return str(folder)


def test_finetune_from_a_run_defaults_to_its_image_size(tmp_path):
    from imgclass_cli.config import TrainConfig
    from imgclass_cli.run import preflight

    data = make_class_folders(tmp_path / "data", per_class=2)
    source = _fake_run(tmp_path / "src", 32)
    warnings = []
    cfg = TrainConfig(command="finetune", data=data, arch="mobilenetv2", weights=source)
    assert preflight.check_train(cfg, warn=warnings.append).image_size == 32 and warnings == []
    cfg.image_size = 96
    assert preflight.check_train(cfg, warn=warnings.append).image_size == 96
    assert len(warnings) == 1 and "trained at 32 px" in warnings[0]


def test_frozen_random_backbone_warns_and_points_to_train(tmp_path):
    from imgclass_cli.config import TrainConfig
    from imgclass_cli.run import preflight

    data = make_class_folders(tmp_path / "data", per_class=2)
    warnings = []
    cfg = TrainConfig(command="finetune", data=data, arch="mobilenetv2", weights="none")
    preflight.check_train(cfg, warn=warnings.append)
    assert len(warnings) == 1 and "imgclass train DATA --arch mobilenetv2" in warnings[0] and "--unfreeze" in warnings[0]
    warnings.clear()
    cfg.unfreeze = 5  # phase 2 trains the top of the backbone: no warning
    preflight.check_train(cfg, warn=warnings.append)
    assert warnings == []


def test_live_reporter_survives_a_second_fit_and_numbers_resumed_epochs():
    """finetune's phase 2 is a second fit on the same reporter: it crashed with KeyError: 0 in a terminal."""
    import io

    from rich.console import Console

    from imgclass_cli.report.output import StderrReporter

    rep = StderrReporter(live=True)
    rep.console = Console(file=io.StringIO(), force_terminal=True, width=100)
    for epochs, first in ((2, 1), (3, 3)):  # phase 1: epochs 1-2; then a fit resumed after 2 of 3 epochs
        rep.train_begin(epochs, 4)
        for epoch in range(first, epochs + 1):
            rep.epoch_begin(epoch)
            rep.batch_end(1, {"loss": 1.0})
            rep.epoch_end(epoch, {"loss": 1.0})
        rep.train_end()
    text = rep.console.file.getvalue()
    assert "epoch 3/3" in text and "epoch 1/3" not in text


def test_offline_imagenet_fails_before_the_image_check_and_keeps_stdout_clean(runner, data_dir, tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    from imgclass_cli.cli import app
    from imgclass_cli.data import verify

    def unreachable(*a, **k):  # offline mock: no network call; Keras' own download code announces and reports it
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))

    def image_check(*a, **k):
        raise AssertionError("images were checked before the weights")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    monkeypatch.setattr(verify, "screen", image_check)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    r = runner.invoke(app, ["finetune", data_dir, "--image-size", "32", "--out", str(tmp_path / "ft")])
    assert r.exit_code == 2, r.output
    assert "could not download the ImageNet weights" in r.stderr and "imgclass train DATA --arch mobilenetv2" in r.stderr
    assert "--weights none" not in r.stderr
    assert r.stdout == "" and "Downloading data from" in r.stderr  # Keras' notice went to stderr


def test_predict_with_nothing_to_predict_is_exit_2(runner, trained_run, tmp_path):
    from imgclass_cli.cli import app

    empty = tmp_path / "empty"
    empty.mkdir()
    for args, stdin, message in [([str(empty)], None, "nothing to predict"), (["-"], "", "nothing to predict"),
                                 ([str(tmp_path / "missing.jpg")], None, "nothing predicted")]:
        r = runner.invoke(app, ["predict", trained_run, *args], input=stdin)
        assert r.exit_code == 2 and message in r.stderr, (args, r.output)


def test_a_scratch_run_is_a_backbone_for_finetune(runner, data_dir, trained_run, tmp_path):
    """finetune --weights RUN of a scratch CNN (issue 10, item 6): its layers up to the pooling layer, frozen."""
    import numpy as np

    from imgclass_cli.cli import app
    from imgclass_cli.run import rundir

    out = str(tmp_path / "ft")
    r = runner.invoke(app, ["finetune", data_dir, "--weights", trained_run, "--epochs", "2", "--out", out, "-q"])
    assert r.exit_code == 0, r.output
    model, info = rundir.load(out)
    source, source_info = rundir.load(trained_run)
    assert info.config.arch == source_info.config.arch == "simple-cnn"
    assert info.image_size == source_info.image_size  # the source run's size, not a default
    assert info.config.augment.value == "none"  # finetune's default, chosen by bench/fmnist_transfer.py
    kernels = [w for w in model.get_layer("backbone").get_weights() if w.ndim == 4]
    source_kernels = [w for w in source.get_weights() if w.ndim == 4]
    assert len(kernels) == 3 and all(np.array_equal(a, b) for a, b in zip(kernels, source_kernels))
    r = runner.invoke(app, ["finetune", data_dir, "--weights", trained_run, "--image-size", "48", "--out",
                            str(tmp_path / "ft2")])
    assert r.exit_code == 2 and "runs at its own size 32" in r.stderr


def test_evaluate_records_the_split_it_used(runner, trained_run, test_dir, tmp_path):
    from imgclass_cli.cli import app

    split_layout = tmp_path / "splits"
    split_layout.mkdir()
    os.symlink(test_dir, split_layout / "val")  # no test/: evaluate picks val
    out = tmp_path / "m.json"
    r = runner.invoke(app, ["evaluate", trained_run, str(split_layout), "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["split"] == "val" and "(val split)" in r.stdout
    r = runner.invoke(app, ["evaluate", trained_run, test_dir, "--out", str(out), "-q"])
    assert json.loads(out.read_text())["split"] == "all"


def test_a_train_run_records_and_shows_only_what_train_has(trained_run, capsys):
    from types import SimpleNamespace

    from imgclass_cli.report import output

    options = json.load(open(os.path.join(trained_run, "config.json")))["options"]
    assert "epochs" in options and not {"unfreeze", "finetune_epochs", "aug_views", "cache"} & set(options)
    result = SimpleNamespace(out="r", class_names=["a", "b"], counts={"train": 4}, image_size=32, seconds=1.0,
                             history=[{"epoch": 1, "phase": 1, "loss": 0.5}], report=None)
    output.print_train_summary(result, quiet=True)
    shown = capsys.readouterr().out
    assert "final loss" in shown and "final phase" not in shown


def test_help_texts_and_debug_after_the_command(runner):
    from imgclass_cli.cli import app, hoist_global_options

    assert hoist_global_options(["train", "d", "--debug"]) == ["--debug", "train", "d"]
    assert hoist_global_options(["predict", "r", "--", "--debug"]) == ["predict", "r", "--", "--debug"]
    helps = {cmd: runner.invoke(app, [cmd, "--help"], env={"COLUMNS": "300"}).stdout
             for cmd in ("finetune", "export", "prepare", "train", "evaluate")}
    assert "RUN" in helps["finetune"] and "export directory" in helps["export"]
    assert "augmentation" not in helps["prepare"]
    # One vocabulary: --val as in prepare, --out for every output; no other spellings.
    assert "--val " in helps["train"] and "--val-split" not in helps["train"]
    assert "--out" in helps["evaluate"] and "--output" not in helps["evaluate"]
