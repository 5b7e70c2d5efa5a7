"""Whole commands through Typer's CliRunner: outputs, files and exit codes a user relies on."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest

from imgclass_cli.cli import app
from imgclass_cli.report.metrics import METRIC_KEYS
from tests.conftest import make_class_folders


def invoke(runner, args, **kw):
    return runner.invoke(app, args, **kw)


def test_help_answers_without_importing_tensorflow():
    code = "import sys; from imgclass_cli.cli import app; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run([sys.executable, "-m", "imgclass_cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ("prepare", "train", "finetune", "evaluate", "predict"):
        assert cmd in out.stdout


def test_version(runner):
    r = invoke(runner, ["--version"])
    assert r.exit_code == 0 and r.stdout.startswith("imgclass ")


def test_every_command_is_in_the_readme_table_and_the_reference():
    import typer

    root = os.path.join(os.path.dirname(__file__), "..")
    readme = open(os.path.join(root, "README.md"), encoding="utf-8").read()
    reference = open(os.path.join(root, "docs", "cli.md"), encoding="utf-8").read()
    commands = sorted(typer.main.get_command(app).commands)
    assert {"prepare", "train", "finetune", "evaluate", "predict", "export", "backbones"} <= set(commands)
    for cmd in commands:
        assert f"| [`imgclass {cmd}`](docs/cli.md#imgclass-{cmd}) |" in readme, f"imgclass {cmd}: no row in README.md"
        assert f"\n## imgclass {cmd}\n" in reference, f"imgclass {cmd}: not in docs/cli.md (run make docs)"


def test_train_writes_a_complete_run_directory(trained_run):
    for name in ("model.keras", "labels.json", "config.json", "history.csv", "metrics.json", "split.csv"):
        assert os.path.exists(os.path.join(trained_run, name)), name
    assert json.load(open(os.path.join(trained_run, "labels.json"))) == ["blue", "green", "red"]
    cfg = json.load(open(os.path.join(trained_run, "config.json")))
    assert cfg["options"]["epochs"] == 12 and cfg["image_size"] == 32 and cfg["options"]["seed"] == 42
    assert {"tensorflow", "keras", "scikit-learn"} <= set(cfg["versions"])
    history = list(csv.DictReader(open(os.path.join(trained_run, "history.csv"))))
    assert len(history) == 12 and {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history[0])
    metrics = json.load(open(os.path.join(trained_run, "metrics.json")))
    # 3 classes: chance is 0.33; a colour-coded set is learnt well past it.
    assert metrics["accuracy"] >= 0.8
    split = list(csv.DictReader(open(os.path.join(trained_run, "split.csv"))))
    assert len(split) == 48 and {r["split"] for r in split} == {"train", "val"}
    assert not [n for n in os.listdir(os.path.dirname(trained_run)) if ".partial" in n]


def test_evaluate_table_and_json(runner, trained_run, test_dir, tmp_path):
    r = invoke(runner, ["evaluate", trained_run, test_dir])
    assert r.exit_code == 0, r.output
    assert "accuracy" in r.stdout and "confusion matrix" in r.stdout
    out_file = tmp_path / "m.json"
    r = invoke(runner, ["evaluate", trained_run, test_dir, "--format", "json", "--out", str(out_file)])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert set(METRIC_KEYS) <= set(report)
    assert report["num_samples"] == 18 and report["accuracy"] >= 0.8
    assert report["confusion_matrix"] and len(report["confusion_matrix"]) == 3
    assert sum(map(sum, report["confusion_matrix"])) == 18
    assert set(report["per_class"]) == {"blue", "green", "red"}
    assert json.load(open(out_file)) == report


def test_evaluate_csv(runner, trained_run, test_dir, tmp_path):
    r = invoke(runner, ["evaluate", trained_run, test_dir, "-f", "csv", "--out", str(tmp_path / "x.json")])
    rows = dict(csv.reader(io.StringIO(r.stdout)))
    assert float(rows["accuracy"]) >= 0.8 and "per_class.red.f1" in rows


def test_evaluate_subset_of_classes_matches_by_name(runner, trained_run, tmp_path):
    make_class_folders(tmp_path, per_class=4, seed=3, classes={"red": (210, 50, 40)})
    r = invoke(runner, ["evaluate", trained_run, str(tmp_path), "-f", "json", "--out", str(tmp_path / "m.json")])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["per_class"]["red"]["support"] == 4 and report["per_class"]["blue"]["support"] == 0


def test_evaluate_unknown_class_is_a_clear_error(runner, trained_run, tmp_path):
    make_class_folders(tmp_path, per_class=2, classes={"red": (210, 50, 40), "purple": (120, 0, 120)})
    r = invoke(runner, ["evaluate", trained_run, str(tmp_path)])
    assert r.exit_code == 2
    assert "purple" in r.stderr and "not classes of this model" in r.stderr
    assert "Traceback" not in r.output


def test_predict_csv_jsonl_order_and_top_k(runner, trained_run, test_dir):
    files = [os.path.join(test_dir, c, "img001.png") for c in ("red", "blue", "green")]
    r = invoke(runner, ["predict", trained_run, *files, "-f", "csv", "-k", "2"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["path"] for row in rows] == files
    assert [row["label"] for row in rows] == ["red", "blue", "green"]
    assert rows[0]["label_2"] and float(rows[0]["score_1"]) >= float(rows[0]["score_2"])
    r = invoke(runner, ["predict", trained_run, *files, "-f", "jsonl", "--top-k", "3"])
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["path"] for x in recs] == files and all(len(x["top_k"]) == 3 for x in recs)
    assert abs(sum(e["score"] for e in recs[0]["top_k"]) - 1) < 1e-4


def test_predict_folder_and_stdin(runner, trained_run, test_dir):
    r = invoke(runner, ["predict", trained_run, os.path.join(test_dir, "green"), "-f", "jsonl"])
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(recs) == 6 and sum(x["label"] == "green" for x in recs) >= 5
    paths = [os.path.join(test_dir, "blue", f"img00{i}.png") for i in (1, 2, 4)]
    r = invoke(runner, ["predict", trained_run, "-", "-f", "csv"], input="\n".join(paths) + "\n")
    assert r.exit_code == 0, r.output
    assert [row["path"] for row in csv.DictReader(io.StringIO(r.stdout))] == paths


def test_predict_unreadable_file_gives_error_row_and_strict_exit(runner, trained_run, test_dir, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_text("not an image")
    good = os.path.join(test_dir, "red", "img001.png")
    r = invoke(runner, ["predict", trained_run, good, str(bad), "-f", "jsonl"])
    assert r.exit_code == 0
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["status"] for x in recs] == ["ok", "error"]
    assert str(bad) in r.stderr
    r = invoke(runner, ["predict", trained_run, good, str(bad), "-f", "jsonl", "--strict"])
    assert r.exit_code == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "/nonexistent/folder"], "no such folder"),
        (["finetune", "/nonexistent/folder", "--weights", "none"], "no such folder"),
        (["evaluate", "/nonexistent/run", "."], "no such run directory"),
        (["predict", "/nonexistent/run", "x.jpg"], "no such run directory"),
    ],
)
def test_missing_paths_are_one_line_errors(runner, args, message):
    r = invoke(runner, args)
    assert r.exit_code == 2
    assert message in r.stderr and "Traceback" not in r.output
    assert r.stdout == ""


def test_empty_and_single_class_data(runner, tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    r = invoke(runner, ["train", str(tmp_path / "empty")])
    assert r.exit_code == 2 and "no images found" in r.stderr
    one = make_class_folders(tmp_path / "one", per_class=3, classes={"only": (1, 2, 3)})
    r = invoke(runner, ["train", one])
    assert r.exit_code == 2 and "only one class" in r.stderr


def test_unknown_backbone_suggests_a_name(runner, data_dir):
    r = invoke(runner, ["finetune", data_dir, "--backbone", "vgg61"])
    assert r.exit_code == 2 and "unknown backbone 'vgg61'" in r.stderr and "did you mean vgg" in r.stderr


def test_bad_option_value_is_a_usage_error(runner, data_dir):
    r = invoke(runner, ["train", data_dir, "--augment", "extreme"])
    assert r.exit_code == 2 and "extreme" in r.output


def test_existing_out_is_not_overwritten_without_force(runner, data_dir, trained_run, tmp_path):
    r = invoke(runner, ["train", data_dir, "--out", trained_run])
    assert r.exit_code == 2 and "--force" in r.stderr
    user_dir = tmp_path / "mine"
    user_dir.mkdir()
    (user_dir / "precious.txt").write_text("keep me")
    r = invoke(runner, ["train", data_dir, "--out", str(user_dir), "--force"])
    assert r.exit_code == 2 and "not an imgclass run directory" in r.stderr
    assert (user_dir / "precious.txt").read_text() == "keep me"


def test_offline_imagenet_download_is_one_line(runner, data_dir, tmp_path, monkeypatch):
    """No network call is made: the standard library's URL opener fails as it does without a network (mock: offline),
    and Keras' own download code reports it in its own words."""
    import urllib.error
    import urllib.request

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    r = invoke(runner, ["finetune", data_dir, "--backbone", "mobilenetv2", "--image-size", "32", "--epochs", "1",
                        "--out", str(tmp_path / "ft2")])
    assert r.exit_code == 2, r.output
    assert r.stderr.count("Error:") == 1 and "--weights PATH" in r.stderr and "keras-home" in r.stderr
    assert "Traceback" not in r.output
    assert not (tmp_path / "ft2").exists()


def test_prepare_example_digits(runner, tmp_path):
    out = tmp_path / "digits"
    r = invoke(runner, ["prepare", "--example", "digits", str(out)])
    assert r.exit_code == 0, r.output
    n_train = sum(len(files) for _, _, files in os.walk(out / "train"))
    n_test = sum(len(files) for _, _, files in os.walk(out / "test"))
    assert (n_train, n_test) == (1437, 360)
    assert sorted(os.listdir(out / "train")) == [str(d) for d in range(10)]
    r = invoke(runner, ["prepare", "--example", "digits", str(out)])
    assert r.exit_code == 2 and "--force" in r.stderr


def test_backbones_lists_the_table(runner):
    r = invoke(runner, ["backbones"])
    assert r.exit_code == 0
    for name in ("vgg16", "resnet50", "mobilenetv3small", "efficientnetb7", "efficientnetv2s", "convnexttiny"):
        assert name in r.stdout


def test_predict_folder_walk_survives_a_symlink_loop(runner, trained_run, test_dir, tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(open(os.path.join(test_dir, "red", "img001.png"), "rb").read())
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    r = invoke(runner, ["predict", trained_run, str(folder), "-f", "jsonl"])
    assert r.exit_code == 0, r.output
    assert [os.path.basename(json.loads(x)["path"]) for x in r.stdout.splitlines()] == ["a.png", "b.png"]
