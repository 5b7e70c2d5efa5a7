"""export: SavedModel and TFLite (float32, float16, int8) with labels and parity; predict on the exports."""

from __future__ import annotations

import csv
import io
import json
import os

import numpy as np
import pytest

from imgclass_cli.cli import app


@pytest.mark.parametrize("name", ["savedmodel", "tflite-float16", "tflite-int8"])
def test_export_writes_model_labels_and_passes_parity(exports, name):
    out, r = exports[name]
    assert r.exit_code == 0, r.output
    assert "top-1 agreement" in r.stdout
    assert open(os.path.join(out, "labels.txt")).read().splitlines() == ["blue", "green", "red"]
    assert json.load(open(os.path.join(out, "labels.json"))) == ["blue", "green", "red"]
    meta = json.load(open(os.path.join(out, "export.json")))
    fmt, _, quantize = name.partition("-")
    assert meta["format"] == fmt and meta["quantize"] == (quantize or None)
    assert meta["input"]["shape"] == [None, 32, 32, 3] and meta["input"]["dtype"] == "float32"
    assert meta["parity"]["images"] == 9  # the run recorded 9 validation images (3 of 16 per class); < --parity 30
    assert meta["parity"]["agreement"] >= 0.99 and meta["parity"]["passed"]
    assert os.path.exists(os.path.join(out, meta["model"]))
    assert meta.get("int8_mode") == ("full-integer" if quantize == "int8" else None)  # the tiny model keeps parity
    assert not [n for n in os.listdir(os.path.dirname(out)) if ".partial" in n]


def test_quantized_tflite_is_smaller(exports):
    f16 = os.path.getsize(os.path.join(exports["tflite-float16"][0], "model.tflite"))
    i8 = os.path.getsize(os.path.join(exports["tflite-int8"][0], "model.tflite"))
    assert i8 < f16


@pytest.mark.parametrize("name", ["savedmodel", "tflite-float16", "tflite-int8"])
def test_predict_with_export_matches_the_run(runner, exports, trained_run, test_dir, name):
    out, _ = exports[name]
    files = [os.path.join(test_dir, c, f"img00{i}.png") for c in ("red", "green", "blue") for i in (1, 2)]
    target = os.path.join(out, "model.tflite") if name.startswith("tflite") and name.endswith("int8") else out
    got = runner.invoke(app, ["predict", target, *files, "-f", "csv"])
    want = runner.invoke(app, ["predict", trained_run, *files, "-f", "csv"])
    assert got.exit_code == 0, got.output
    rows = list(csv.DictReader(io.StringIO(got.stdout)))
    assert [r["path"] for r in rows] == files
    assert [r["label"] for r in rows] == [r["label"] for r in csv.DictReader(io.StringIO(want.stdout))]


def test_tflite_predictor_takes_any_batch_size(exports, trained_run, test_dir):
    from imgclass_cli.run import export, predictors

    p = predictors.load(os.path.join(exports["tflite-float16"][0], "model.tflite"))
    keras_p = predictors.load(trained_run)
    files = sorted(os.path.join(test_dir, "green", n) for n in os.listdir(os.path.join(test_dir, "green")))
    x = export.load_images(files, p.image_size)
    full = p.predict(x)
    assert full.shape == (len(files), 3)
    np.testing.assert_allclose(np.concatenate([p.predict(x[:1]), p.predict(x[1:4]), p.predict(x[4:])]), full, atol=1e-5)
    np.testing.assert_allclose(full, keras_p.predict(x), atol=2e-3)


def test_parity_below_threshold_fails_with_exit_3_and_writes_nothing(runner, trained_run, tmp_path, monkeypatch):
    from imgclass_cli.run import predictors

    class Constant:
        """An export that always answers the first class: what a preprocessing mismatch looks like."""

        class_names, image_size = ["blue", "green", "red"], 32

        def predict(self, x):
            return np.tile([1.0, 0.0, 0.0], (len(x), 1))

    monkeypatch.setattr(predictors, "load", lambda path: Constant())
    out = tmp_path / "bad"
    r = runner.invoke(app, ["export", trained_run, "--to", "tflite", "--out", str(out), "--parity", "10"])
    assert r.exit_code == 3
    assert "parity check failed: top-1 agreement" in r.stderr and "short by" in r.stderr
    assert not out.exists() and not [n for n in os.listdir(tmp_path) if ".partial" in n]


def test_export_usage_errors(runner, trained_run, tmp_path, exports):
    r = runner.invoke(app, ["export", trained_run, "--to", "savedmodel", "--quantize", "int8", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--quantize int8 applies to --to tflite only, not --to savedmodel" in r.stderr
    r = runner.invoke(app, ["export", trained_run, "--to", "keras", "--quantize", "int8", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "not --to keras" in r.stderr
    r = runner.invoke(app, ["export", trained_run, "--to", "pt"])
    assert r.exit_code == 2
    existing = exports["savedmodel"][0]
    r = runner.invoke(app, ["export", trained_run, "--to", "savedmodel", "--out", existing])
    assert r.exit_code == 2 and "--force" in r.stderr
    r = runner.invoke(app, ["predict", str(tmp_path / "missing.tflite"), "x.png"])
    assert r.exit_code == 2 and "no such file" in r.stderr


def test_int8_falls_back_to_dynamic_range_when_full_integer_loses_parity(runner, trained_run, tmp_path, monkeypatch):
    from imgclass_cli.run import predictors

    real_load = predictors.load

    class Constant:
        class_names, image_size = ["blue", "green", "red"], 32

        def predict(self, x):
            return np.tile([1.0, 0.0, 0.0], (len(x), 1))

    def load(path):
        meta = json.load(open(os.path.join(path, "export.json")))
        return Constant() if meta.get("int8_mode") == "full-integer" else real_load(path)

    monkeypatch.setattr(predictors, "load", load)
    out = tmp_path / "int8"
    r = runner.invoke(app, ["export", trained_run, "--to", "tflite", "--quantize", "int8", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "trying dynamic-range int8" in r.stderr and "int8, dynamic-range" in r.stdout
    meta = json.load(open(out / "export.json"))
    assert meta["int8_mode"] == "dynamic-range" and meta["parity"]["passed"]
    assert not (out / ".saved_model").exists()
