"""Knowing when not to answer and whether the numbers can be trusted (issues 21 and 25): predict --min-confidence,
evaluate's risk-coverage table and --target-accuracy, test-time augmentation, images the run has seen, and a model
whose predictions collapsed to one class."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil

import numpy as np
import pytest

from imgclass_cli.cli import app
from tests.conftest import COLOURS, make_class_folders


def _files(folder, n=None):
    found = sorted(os.path.join(folder, c, f) for c in sorted(os.listdir(folder)) for f in os.listdir(os.path.join(folder, c)))
    return found[:n] if n else found


def test_min_confidence_marks_unsure_records_and_keeps_their_answer(runner, trained_run, test_dir, tmp_path):
    files = _files(test_dir, 6)
    base = runner.invoke(app, ["predict", trained_run, *files, "-f", "jsonl"])
    conf = [json.loads(line)["confidence"] for line in base.stdout.splitlines()]
    p = float(np.median(conf))  # half the images fall below
    bad = str(tmp_path / "notes.jpg")
    open(bad, "w").write("not an image")
    r = runner.invoke(app, ["predict", trained_run, *files, bad, "-f", "jsonl", "--min-confidence", str(p), "--strict"])
    assert r.exit_code == 1  # --strict counts the unreadable file, never an unsure answer
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [rec["status"] for rec in records] == ["unsure" if c < p else "ok" for c in conf] + ["error"]
    unsure = [rec for rec in records if rec["status"] == "unsure"]
    assert unsure and all(rec["label"] and rec["confidence"] < p and rec["error"] is None for rec in unsure)
    assert [rec["label"] for rec in records[:6]] == [json.loads(line)["label"] for line in base.stdout.splitlines()]
    r = runner.invoke(app, ["predict", trained_run, *files, "-f", "csv", "--min-confidence", str(p), "--strict"])
    assert r.exit_code == 0, r.output  # unsure is an answer: exit 0 even with --strict
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["status"] for row in rows] == ["unsure" if c < p else "ok" for c in conf]
    assert "Warning" not in r.stderr
    r = runner.invoke(app, ["predict", trained_run, *files, "--min-confidence", "1.5"])
    assert r.exit_code == 2 and "'--min-confidence': must be between 0.0 and 1.0; got 1.5" in r.stderr


def test_the_predict_table_shows_unsure_records(capsys):
    from imgclass_cli.report import output

    def record(path, status):
        return {"path": path, "status": status, "error": None, "label": "red", "confidence": 0.5, "top_k": []}

    errors = output.write_predictions([record("a.png", "ok"), record("b.png", "unsure")], "table", 1,
                                      on_error=lambda r: None)
    table = capsys.readouterr().out
    assert errors == 0 and "status" in table and table.count("unsure") == 1 and "b.png" in table
    output.write_predictions([record("a.png", "ok")], "table", 1, on_error=lambda r: None)
    assert "status" not in capsys.readouterr().out  # no column without --min-confidence answers


def test_risk_coverage_and_target_accuracy(runner, trained_run, test_dir, tmp_path):
    r = runner.invoke(app, ["evaluate", trained_run, test_dir, "-f", "json", "--out", str(tmp_path / "m.json"),
                            "--target-accuracy", "0.95"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    rows = report["risk_coverage"]
    assert [row["threshold"] for row in rows] == sorted(row["threshold"] for row in rows)
    assert rows[0] == {"threshold": 0.0, "coverage": 1.0, "accuracy": report["accuracy"], "images": 18}
    assert all(row["images"] == round(row["coverage"] * 18) for row in rows)
    target = report["target"]
    assert target["accuracy"] == 0.95 and target["reachable"]
    # What predict --min-confidence at the target answers, and how well, is what metrics.json says.
    p = runner.invoke(app, ["predict", trained_run, test_dir, "-f", "jsonl", "--min-confidence",
                            repr(target["threshold"])])
    records = [json.loads(line) for line in p.stdout.splitlines()]
    ok = [rec for rec in records if rec["status"] == "ok"]
    assert len(ok) == target["images"] and len(ok) / len(records) == pytest.approx(target["coverage"])
    right = [rec["label"] == os.path.basename(os.path.dirname(rec["path"])) for rec in ok]
    assert np.mean(right) >= 0.95


def test_tta_averages_the_named_views(runner, trained_run, test_dir, tmp_path):
    from imgclass_cli.run import inference, predictors, rundir
    from imgclass_cli.run.export import load_images

    r = runner.invoke(app, ["evaluate", trained_run, test_dir, "-f", "json", "--out", str(tmp_path / "m.json"),
                            "--tta"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    # The run trained with --augment none: crops only, no flip.
    assert report["tta"] == ["original", "crop_top_left", "crop_top_right", "crop_bottom_left", "crop_bottom_right"]
    files = _files(test_dir, 4)
    p = runner.invoke(app, ["predict", trained_run, *files, "-f", "jsonl", "--tta", "--top-k", "3", "--precision",
                            "float32"])  # as the predictor below computes
    got = [{e["label"]: e["score"] for e in json.loads(line)["top_k"]} for line in p.stdout.splitlines()]
    predictor = predictors.load(trained_run)
    x = load_images(files, predictor.image_size)
    views = inference.tta_views(predictor.image_size, flip=False)
    want = np.mean([predictor.predict(np.asarray(fn(x), dtype=np.float32)) for _, fn in views], axis=0)
    names = predictor.class_names
    np.testing.assert_allclose([[g[n] for n in names] for g in got], want, atol=1e-5)
    assert not np.allclose(want, predictor.predict(x), atol=1e-4)  # the views do change the numbers
    # A run trained with flips gets the flip too.
    info = rundir.read_info(trained_run)
    assert not inference.flips_for(info)
    info.config.augment = "light"
    assert inference.flips_for(info)
    assert [name for name, _ in inference.tta_views(32, flip=True)][:2] == ["original", "flip"]
    flipped = inference.tta_views(4, flip=True)[1][1](np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1))
    assert np.asarray(flipped)[0, 0, :, 0].tolist() == [3, 2, 1, 0]


def test_evaluate_says_when_the_run_has_seen_the_images(runner, trained_run, data_dir, test_dir, tmp_path):
    # The run's own images, and a gate that refuses them (from the environment, as a CI job sets it).
    r = runner.invoke(app, ["evaluate", trained_run, data_dir, "-f", "json", "--out", str(tmp_path / "a.json")],
                      env={"IMGCLASS_FAIL_OVER": "seen_by_run.fraction=0"})
    assert r.exit_code == 3, r.output
    seen = json.loads(r.stdout)["seen_by_run"]
    assert seen == {"train": 39, "val": 9, "of": 48, "fraction": 1.0, "checked": True}
    assert ("Warning: 48 of the 48 images evaluated were seen by the run (39 in its training split and 9 in its "
            "validation split): these metrics are not a test score") in r.stderr
    assert "Error: quality gate failed: seen_by_run.fraction 1.0000 > 0.0000 (over by 1.0000)" in r.stderr
    # Hard links (prepare's default) and symlinks are the same images; held-out images are not (a held-out folder
    # of them: tests/test_formats.py, seen_by_run 0 of 18).
    mixed = tmp_path / "mixed"
    for c in ("red", "blue"):
        (mixed / c).mkdir(parents=True)
    os.link(os.path.join(data_dir, "red", "img001.png"), mixed / "red" / "linked.png")
    os.symlink(os.path.join(data_dir, "blue", "img002.png"), mixed / "blue" / "symlinked.png")
    shutil.copy(os.path.join(test_dir, "red", "img001.png"), mixed / "red" / "new.png")
    shutil.copy(os.path.join(test_dir, "blue", "img001.png"), mixed / "blue" / "new.png")
    r = runner.invoke(app, ["evaluate", trained_run, str(mixed), "-f", "json", "--out", str(tmp_path / "b.json")])
    seen = json.loads(r.stdout)["seen_by_run"]
    assert seen["train"] + seen["val"] == 2 and seen["of"] == 4 and seen["fraction"] == 0.5
    assert "2 of the 4 images evaluated were seen by the run" in r.stderr


def test_evaluate_says_it_took_val_for_want_of_a_test_split(runner, trained_run, test_dir, tmp_path):
    root = tmp_path / "splits"
    shutil.copytree(test_dir, root / "train")
    shutil.copytree(test_dir, root / "val")
    r = runner.invoke(app, ["evaluate", trained_run, str(root), "--out", str(tmp_path / "m.json")])
    assert r.exit_code == 0, r.output
    assert f"{root}: no test split; evaluating on its val split (--split chooses)" in " ".join(r.stderr.split())


def test_a_collapsed_model_is_named(runner, trained_run, tmp_path):
    # Two classes that both look red to the model: it answers red for every image.
    data = make_class_folders(tmp_path / "reds", per_class=4, seed=3, classes={"red": COLOURS["red"],
                                                                               "blue": COLOURS["red"]})
    r = runner.invoke(app, ["evaluate", trained_run, data, "-f", "json", "--out", str(tmp_path / "m.json")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["prediction_collapse"] == {"collapsed": True, "class": "red", "share": 1.0}
    assert "Warning: the model predicts 'red' for 100% of the 8 images" in r.stderr
