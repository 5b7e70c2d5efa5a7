"""The machine-readable contract: metrics.json keys (pinned, and documented in docs/guide.md), evaluate csv,
misclassified.csv, the PNGs, predict csv/jsonl schemas, stdin, error rows, env vars, NO_COLOR and plain output."""

from __future__ import annotations

import csv
import io
import json
import os
import re

import pytest

from imgclass_cli.cli import app
from tests.conftest import COLOURS, make_class_folders

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
README = os.path.join(os.path.dirname(__file__), "..", "README.md")
GUIDE = os.path.join(os.path.dirname(__file__), "..", "docs", "guide.md")

# The stable schema of metrics.json (docs/guide.md "metrics.json"). Changing it is a breaking change for every CI job
# that reads the file: update the guide's table, this test and the changelog together.
METRICS_TOP_LEVEL = {
    "run", "data", "split", "class_names", "num_samples",
    "accuracy", "balanced_accuracy",
    "precision_macro", "recall_macro", "f1_macro",
    "precision_weighted", "recall_weighted", "f1_weighted",
    "ece", "nll", "brier", "ece_uncalibrated", "nll_uncalibrated", "brier_uncalibrated",
    "top_k_accuracy", "per_class", "confusion_matrix",
    "calibration", "risk_coverage", "prediction_collapse", "seen_by_run", "tta",
}
# Only with evaluate --target-accuracy.
METRICS_OPTIONAL = {"target"}


def evaluate_json(runner, run, data, out_file):
    r = runner.invoke(app, ["evaluate", run, data, "-f", "json", "--out", str(out_file)])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout), r


def test_metrics_json_keys_are_pinned(runner, trained_run, test_dir, tmp_path):
    report, _ = evaluate_json(runner, trained_run, test_dir, tmp_path / "metrics.json")
    assert set(report) == METRICS_TOP_LEVEL
    assert set(report["top_k_accuracy"]) == {"top_1"}  # 3 classes: top-3 and top-5 would always be 1
    for name in ("blue", "green", "red"):
        assert set(report["per_class"][name]) == {"precision", "recall", "f1", "support"}
    assert report["class_names"] == ["blue", "green", "red"] and report["num_samples"] == 18
    for key in METRICS_TOP_LEVEL - {"run", "data", "split", "class_names", "top_k_accuracy", "per_class",
                                    "confusion_matrix", "num_samples", "calibration", "risk_coverage",
                                    "prediction_collapse", "seen_by_run", "tta"}:
        upper = {"nll": 36.05, "nll_uncalibrated": 36.05, "brier": 2.0, "brier_uncalibrated": 2.0}.get(key, 1.0)
        assert isinstance(report[key], float) and 0.0 <= report[key] <= upper, key
    assert set(report["calibration"]) == {"temperature", "bins"} and report["calibration"]["bins"] == 15
    assert set(report["seen_by_run"]) == {"train", "val", "of", "fraction", "checked"}
    assert set(report["prediction_collapse"]) == {"collapsed", "class", "share"}
    assert all(set(row) == {"threshold", "coverage", "accuracy", "images"} for row in report["risk_coverage"])
    assert report["tta"] is None
    assert report["seen_by_run"] == {"train": 0, "val": 0, "of": 18, "fraction": 0.0, "checked": True}  # held out


def test_guide_documents_every_metrics_key():
    text = open(GUIDE, encoding="utf-8").read()
    section = text.split("### `metrics.json`", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    documented = {key for line in rows for key in re.findall(r"`([a-z_0-9]+)`", line.split("|")[1])}
    assert documented == METRICS_TOP_LEVEL | METRICS_OPTIONAL


def test_evaluate_csv_schema(runner, trained_run, test_dir, tmp_path):
    r = runner.invoke(app, ["evaluate", trained_run, test_dir, "-f", "csv", "--out", str(tmp_path / "m.json"),
                            "--target-accuracy", "1"])
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == ["metric", "value"]
    keys = [k for k, _ in rows[1:]]
    assert {"accuracy", "f1_macro", "top_k_accuracy.top_1", "per_class.red.recall", "num_samples"} <= set(keys)
    assert not any(k.startswith("confusion_matrix") or k.startswith("class_names") for k in keys)
    # The risk-coverage rows by threshold, the target, the calibration (issue 21).
    values = dict(rows[1:])
    assert values["risk_coverage[0.0000].images"] == "18" and "risk_coverage[0.9900].coverage" in values
    assert {"target.threshold", "target.coverage", "ece", "ece_uncalibrated", "calibration.temperature",
            "seen_by_run.fraction", "prediction_collapse.share"} <= set(keys)


def test_evaluate_table_is_plain_text_when_not_a_terminal(runner, trained_run, test_dir, tmp_path):
    r = runner.invoke(app, ["evaluate", trained_run, test_dir, "--out", str(tmp_path / "m.json")])
    assert r.exit_code == 0
    assert "balanced_accuracy" in r.stdout and "top_1_accuracy" in r.stdout
    assert "ece_uncalibrated" in r.stdout and "temperature" in r.stdout
    assert "risk-coverage" in r.stdout and "min confidence" in r.stdout
    assert re.search(r"0\.0000\W+1\.0000\W+[\d.]+\W+18\b", r.stdout)  # threshold 0 answers all 18 images
    assert "\x1b[" not in r.stdout and "\x1b[" not in r.stderr


def test_misclassified_csv_and_confusion_png_beside_the_metrics(runner, trained_run, tmp_path):
    # Swapped colours make mistakes certain: each image of "red" looks blue to the model, and vice versa.
    data = make_class_folders(tmp_path / "swapped", per_class=3, seed=7,
                              classes={"red": COLOURS["blue"], "blue": COLOURS["red"], "green": COLOURS["green"]})
    out = tmp_path / "eval" / "metrics.json"
    report, r = evaluate_json(runner, trained_run, data, out)
    for name in ("misclassified.csv", "confusion_matrix.png", "reliability.png"):
        assert str(out.parent / name) in r.stderr  # "wrote ..." names every file
    for name in ("confusion_matrix.png", "reliability.png"):
        with open(out.parent / name, "rb") as f:
            assert f.read(8) == PNG_MAGIC
    rows = list(csv.DictReader(open(out.parent / "misclassified.csv")))
    assert list(rows[0]) == ["path", "true", "predicted", "confidence"]
    wrong = report["num_samples"] - round(report["accuracy"] * report["num_samples"])
    assert len(rows) == wrong >= 6
    confidences = [float(row["confidence"]) for row in rows]
    assert confidences == sorted(confidences, reverse=True)  # the most confident mistakes first
    assert all(row["true"] != row["predicted"] and os.path.exists(row["path"]) for row in rows)
    assert {row["true"] for row in rows} >= {"red", "blue"}


def test_training_writes_curves_png(trained_run):
    with open(os.path.join(trained_run, "training_curves.png"), "rb") as f:
        assert f.read(8) == PNG_MAGIC


def test_predict_csv_and_jsonl_schemas(runner, trained_run, test_dir):
    files = [os.path.join(test_dir, "red", "img001.png"), os.path.join(test_dir, "blue", "img002.png")]
    r = runner.invoke(app, ["predict", trained_run, *files, "-f", "csv"])
    assert next(csv.reader(io.StringIO(r.stdout))) == ["path", "status", "label", "confidence", "error"]
    r = runner.invoke(app, ["predict", trained_run, *files, "-f", "csv", "-k", "2"])
    assert next(csv.reader(io.StringIO(r.stdout))) == [
        "path", "status", "label", "confidence", "label_1", "score_1", "label_2", "score_2", "error"]
    r = runner.invoke(app, ["predict", trained_run, *files, "-f", "jsonl", "-k", "2"])
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(recs) == 2
    for rec in recs:
        assert set(rec) == {"path", "status", "error", "label", "confidence", "top_k"}
        assert rec["status"] == "ok" and rec["error"] is None and isinstance(rec["confidence"], float)
        assert [set(e) for e in rec["top_k"]] == [{"label", "score"}] * 2
        assert rec["top_k"][0]["label"] == rec["label"] and rec["top_k"][0]["score"] == rec["confidence"]


def test_predict_stdin_paths_and_folders_in_input_order(runner, trained_run, test_dir):
    one = os.path.join(test_dir, "blue", "img004.png")
    lines = [one, "", os.path.join(test_dir, "green"), one]  # a blank line is ignored; a folder expands, sorted
    r = runner.invoke(app, ["predict", trained_run, "-", "-f", "jsonl"], input="\n".join(lines) + "\n")
    assert r.exit_code == 0, r.output
    paths = [json.loads(line)["path"] for line in r.stdout.splitlines()]
    green = sorted(os.path.join(test_dir, "green", n) for n in os.listdir(os.path.join(test_dir, "green")))
    assert paths == [one, *green, one]


def test_unreadable_file_mid_batch_keeps_order_and_strict_fails(runner, trained_run, test_dir, tmp_path):
    bad = tmp_path / "truncated.png"
    bad.write_bytes(open(os.path.join(test_dir, "red", "img001.png"), "rb").read()[:40])
    missing = str(tmp_path / "gone.jpg")
    good = [os.path.join(test_dir, c, "img002.png") for c in ("red", "green", "blue")]
    args = [good[0], str(bad), good[1], missing, good[2]]
    r = runner.invoke(app, ["predict", trained_run, *args, "-f", "csv", "--batch-size", "2"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["path"] for row in rows] == args
    assert [row["status"] for row in rows] == ["ok", "error", "ok", "error", "ok"]
    assert rows[1]["label"] == "" and rows[1]["error"] and "No such file" in rows[3]["error"]
    assert str(bad) in r.stderr and missing in r.stderr and "Warning" in r.stderr
    r = runner.invoke(app, ["predict", trained_run, *args, "-f", "csv", "--strict"])
    assert r.exit_code == 1 and "2 image(s) could not be read" in r.stderr
    assert len(list(csv.DictReader(io.StringIO(r.stdout)))) == 5  # every row is still written


def test_predict_streams_paths_lazily(trained_run, test_dir):
    """Bounded memory: the first records come out after one batch of paths was read, not the whole input."""
    from imgclass_cli.config import PredictConfig
    from imgclass_cli.run import inference

    pulled = []

    def paths():
        for i in range(10_000):
            pulled.append(i)
            yield os.path.join(test_dir, "red", "img001.png")

    records = inference.predict(trained_run, paths(), PredictConfig(batch_size=4))
    first = next(records)
    assert first["status"] == "ok" and len(pulled) <= 8
    records.close()


def test_environment_variables_set_common_options(runner, trained_run, test_dir):
    files = [os.path.join(test_dir, "red", "img001.png")]
    r = runner.invoke(app, ["predict", trained_run, *files], env={"IMGCLASS_PREDICT_FORMAT": "jsonl", "IMGCLASS_TOP_K": "2"})
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["top_k"]) == 2
    r = runner.invoke(app, ["predict", trained_run, *files, "-f", "csv"], env={"IMGCLASS_FORMAT": "jsonl"})
    assert r.stdout.startswith("path,status")  # a flag wins over the environment


def test_no_color_and_force_color(runner):
    r = runner.invoke(app, ["evaluate", "/nonexistent/run", "."], env={"FORCE_COLOR": "1"})
    assert "\x1b[" in r.stderr  # the control: colour when forced
    r = runner.invoke(app, ["evaluate", "/nonexistent/run", "."], env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert not re.search(r"\x1b\[[0-9;]*3[0-9]", r.stderr)  # no foreground colour codes with NO_COLOR
    r = runner.invoke(app, ["evaluate", "/nonexistent/run", "."])
    assert r.stderr.startswith("Error: ") and "\x1b[" not in r.stderr


@pytest.mark.slow
def test_tensorboard_logs_and_curves(runner, data_dir, tmp_path):
    out = tmp_path / "tb-run"
    r = runner.invoke(app, ["train", data_dir, "--arch", "simple-cnn", "--image-size", "32", "--epochs", "2",
                            "--augment", "none", "--out", str(out), "--quiet", "--tensorboard"])
    assert r.exit_code == 0, r.output
    for split in ("train", "validation"):
        events = os.listdir(out / "tensorboard" / split)
        assert len(events) == 1 and events[0].startswith("events.out.tfevents")
    assert (out / "training_curves.png").exists()
    assert os.listdir(tmp_path) == ["tb-run"]  # the live log folder beside the run was moved in


def test_export_is_documented_and_listed(runner):
    assert "imgclass export" in open(README, encoding="utf-8").read()
    r = runner.invoke(app, ["--help"])
    assert "export" in r.stdout and "--install-completion" in r.stdout  # Typer's shell completion
    r = runner.invoke(app, ["export", "--help"])
    for option in ("--to", "--quantize", "--parity", "--min-agreement", "--out", "--data"):
        assert option in r.stdout
