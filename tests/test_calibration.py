"""Calibrated confidence (issue 21): the math of report/calibration.py against hand-computed values, the temperature
fitted at the end of train and saved in the model, and the same calibrated probabilities from evaluate, predict
and every export."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from imgclass_cli.cli import app
from imgclass_cli.report import calibration as cal
from imgclass_cli.report.metrics import compute_report, prediction_collapse

# Four images of three classes: two at confidence 0.9 (one right), one right at 0.6 and one wrong at 0.4 -- 0.6
# and 0.4 sit exactly on bin edges (9/15 and 6/15): the bins are (lower, upper], as in Guo et al.'s code.
PROBS = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.2, 0.6, 0.2], [0.4, 0.35, 0.25]])
LABELS = np.array([0, 1, 1, 1])


def test_ece_nll_brier_by_hand():
    # bin (13/15, 14/15]: 2 images, accuracy 0.5, confidence 0.9 -> 2/4 * 0.4; (8/15, 9/15]: 1 image right at 0.6
    # -> 1/4 * 0.4; (5/15, 6/15]: 1 image wrong at 0.4 -> 1/4 * 0.4
    assert cal.ece(PROBS, LABELS) == pytest.approx(0.2 + 0.1 + 0.1)
    bins = cal.reliability_bins(PROBS, LABELS)
    assert len(bins) == 15 and sum(b.images for b in bins) == 4
    assert (bins[8].upper, bins[8].images, bins[8].accuracy) == (pytest.approx(0.6), 1, 1.0)
    assert (bins[5].upper, bins[5].images, bins[5].accuracy) == (pytest.approx(0.4), 1, 0.0)
    assert (bins[13].images, bins[13].accuracy, bins[13].confidence) == (2, 0.5, pytest.approx(0.9))
    # Brier: sum over classes of (p - onehot)^2, averaged: 0.015, 1.715, 0.24, 0.645
    assert cal.brier(PROBS, LABELS) == pytest.approx((0.015 + 1.715 + 0.24 + 0.645) / 4)
    assert cal.nll(PROBS, LABELS) == pytest.approx(-(math.log(0.9) + math.log(0.05) + math.log(0.6) + math.log(0.35)) / 4)
    # A probability of 0 for the true class costs -log(eps) (scikit-learn's clip), not infinity.
    assert cal.nll(np.array([[1.0, 0.0]]), [1]) == pytest.approx(-math.log(np.finfo(np.float64).eps))
    perfect = np.eye(3)
    assert cal.ece(perfect, [0, 1, 2]) == 0.0 and cal.brier(perfect, [0, 1, 2]) == 0.0


def test_report_carries_calibrated_and_uncalibrated_metrics_from_the_same_logits():
    logits = np.log(PROBS)
    r = compute_report(LABELS, cal.softmax(logits, 2.0), ["a", "b", "c"], probs_uncalibrated=cal.softmax(logits),
                       temperature=2.0)
    assert r.ece_uncalibrated == pytest.approx(0.4) and r.brier_uncalibrated == pytest.approx(2.615 / 4)
    assert r.nll == pytest.approx(cal.logits_nll(logits, LABELS, 2.0))
    assert r.calibration == {"temperature": 2.0, "bins": 15}
    assert r.accuracy == 0.5  # a temperature never changes the top-1 class


def test_temperature_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(20000, 5))
    labels = np.array([rng.choice(5, p=p) for p in cal.softmax(logits, 2.0)])  # the data is calibrated at T = 2
    fit = cal.fit_temperature(logits, labels)
    assert fit.temperature == pytest.approx(2.0, rel=0.05) and not fit.at_bound
    assert fit.nll_after < fit.nll_before == pytest.approx(cal.logits_nll(logits, labels, 1.0))
    for t in (fit.temperature * 1.02, fit.temperature / 1.02):  # a minimum, not just an improvement
        assert cal.logits_nll(logits, labels, t) > fit.nll_after
    # From logits the NLL is exact where float probabilities underflow (a saturated, wrong row).
    assert cal.logits_nll([[0.0, 800.0]], [0]) == pytest.approx(800.0)
    assert cal.logits_nll(logits[:50], labels[:50], 1.5) == pytest.approx(cal.nll(cal.softmax(logits[:50], 1.5),
                                                                                   labels[:50]))


def test_temperature_fit_without_mistakes_has_no_minimum():
    logits = np.array([[3.0, 0.0], [0.0, 2.0], [4.0, 1.0]])
    fit = cal.fit_temperature(logits, [0, 1, 0])
    assert fit.at_bound and fit.mistakes == 0 and fit.temperature == 1.0


def _binary(conf, right):
    """Two-class probabilities with these top-1 confidences, labelled right or wrong."""
    probs = np.array([[c, 1 - c] for c in conf])
    return probs, np.array([0 if r else 1 for r in right])


def test_risk_coverage_by_hand():
    probs, labels = _binary([0.95, 0.9, 0.8, 0.6, 0.55], [1, 1, 0, 1, 0])
    rows = {r["threshold"]: r for r in cal.risk_coverage(probs, labels)}
    # The fixed thresholds, and 0.55 / 0.6 / 0.8: where the coverage crosses 90 %, 80 % and 50 %.
    assert sorted(rows) == [0.0, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]
    assert rows[0.0] == {"threshold": 0.0, "coverage": 1.0, "accuracy": 0.6, "images": 5}
    assert rows[0.6] == {"threshold": 0.6, "coverage": 0.8, "accuracy": 0.75, "images": 4}
    assert rows[0.8]["accuracy"] == pytest.approx(2 / 3) and rows[0.8]["images"] == 3
    assert rows[0.9] == {"threshold": 0.9, "coverage": 0.4, "accuracy": 1.0, "images": 2}
    assert rows[0.99] == {"threshold": 0.99, "coverage": 0.0, "accuracy": None, "images": 0}


def test_target_threshold_by_hand():
    probs, labels = _binary([0.95, 0.9, 0.8, 0.6, 0.55], [1, 1, 0, 1, 0])
    assert cal.target_threshold(probs, labels, 1.0) == {"accuracy": 1.0, "threshold": 0.9, "coverage": 0.4,
                                                        "images": 2, "reachable": True}
    assert cal.target_threshold(probs, labels, 0.75)["threshold"] == 0.6  # the most coverage that reaches 0.75
    assert cal.target_threshold(*_binary([0.9, 0.8], [0, 1]), 0.99) == {
        "accuracy": 0.99, "threshold": None, "coverage": 0.0, "images": 0, "reachable": False}
    # Equal confidences are answered together: a right and a wrong answer at 0.9 cannot be told apart.
    assert not cal.target_threshold(*_binary([0.9, 0.9, 0.8], [1, 0, 1]), 1.0)["reachable"]
    # Rounded down to 4 decimals unless that lets in a wrong answer: then the exact confidence.
    assert cal.target_threshold(*_binary([0.95, 0.91234, 0.9], [1, 1, 0]), 1.0)["threshold"] == 0.9123
    assert cal.target_threshold(*_binary([0.95, 0.91234, 0.91231], [1, 1, 0]), 1.0)["threshold"] == 0.91234


def test_prediction_collapse_definition():
    names = ["a", "b"]
    assert prediction_collapse([0] * 5 + [1] * 5, [0] * 10, names) == {"collapsed": True, "class": "a", "share": 1.0}
    assert prediction_collapse([0] * 5 + [1] * 5, [0] * 9 + [1], names)["collapsed"] is False  # 90 % < 95 %
    assert prediction_collapse([0] * 10, [0] * 10, names)["collapsed"] is False  # one class in the data
    assert prediction_collapse([0] * 19 + [1], [0] * 20, names)["collapsed"] is False  # b is 5 % of the data


# --- the temperature of a run ----------------------------------------------------------------------------------

def test_a_calibrated_run_records_its_temperature(calibrated_run):
    run, data = calibrated_run
    record = json.load(open(os.path.join(run, "config.json")))["calibration"]
    assert record["fitted_on"] == "val" and record["images"] == 51 and record["temperature"] != 1.0
    assert record["nll_after"] < record["nll_before"]
    from imgclass_cli.run import rundir
    from imgclass_cli.run.inference import temperature_layer

    model, info = rundir.load(run)
    assert float(temperature_layer(model).temperature.numpy()) == pytest.approx(record["temperature"], rel=1e-6)
    assert info.config.calibrate is True
    metrics = json.load(open(os.path.join(run, "metrics.json")))  # the validation metrics, at that temperature
    assert metrics["calibration"]["temperature"] == pytest.approx(record["temperature"])
    assert metrics["nll"] == pytest.approx(record["nll_after"], rel=1e-5)
    assert metrics["nll_uncalibrated"] == pytest.approx(record["nll_before"], rel=1e-5)


def test_too_small_a_validation_split_keeps_temperature_1(trained_run):
    record = json.load(open(os.path.join(trained_run, "config.json")))["calibration"]
    assert record == {"temperature": 1.0, "fitted_on": None, "images": 9,
                      "reason": "fewer than 50 validation images"}


def test_no_calibrate_or_no_validation_split_keeps_temperature_1():
    from imgclass_cli.config import TrainConfig
    from imgclass_cli.run import training

    said = []

    class Reporter:
        info = warn = said.append

    record = training._calibrate(None, TrainConfig(calibrate=False), np.zeros(60, int), np.zeros((60, 3)), Reporter())
    assert record == {"temperature": 1.0, "fitted_on": None, "images": 60, "reason": "--no-calibrate"} and not said
    assert TrainConfig.from_dict({"calibrate": False}).calibrate is False
    report, record = training._calibrated_report(None, TrainConfig(), None, None, Reporter())
    assert report is None and record["temperature"] == 1.0 and record["reason"] == "no validation split"
    assert said == ["calibration: no validation split; the temperature stays 1"]


def test_evaluate_and_predict_give_the_calibrated_probabilities(runner, calibrated_run, tmp_path):
    run, data = calibrated_run
    t = json.load(open(os.path.join(run, "config.json")))["calibration"]["temperature"]
    r = runner.invoke(app, ["evaluate", run, data, "-f", "json", "--out", str(tmp_path / "m.json")])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["calibration"] == {"temperature": pytest.approx(t), "bins": 15}
    p = runner.invoke(app, ["predict", run, data, "-f", "jsonl", "--top-k", "3"])
    assert p.exit_code == 0, p.output
    records = [json.loads(line) for line in p.stdout.splitlines()]
    names = report["class_names"]
    probs = np.array([[{e["label"]: e["score"] for e in rec["top_k"]}[n] for n in names] for rec in records])
    labels = np.array([names.index(os.path.basename(os.path.dirname(rec["path"]))) for rec in records])
    # predict's probabilities are the calibrated ones: the same NLL and ECE as evaluate's...
    assert cal.nll(probs, labels) == pytest.approx(report["nll"], abs=1e-5)
    assert cal.ece(probs, labels) == pytest.approx(report["ece"], abs=1e-5)
    # ...and undoing T (softmax(T log p) = softmax(logits)) gives evaluate's uncalibrated ones.
    assert cal.nll(cal.softmax(np.log(probs), 1 / t), labels) == pytest.approx(report["nll_uncalibrated"], abs=1e-4)


@pytest.mark.slow
def test_exports_carry_the_temperature(runner, calibrated_run, tmp_path):
    from imgclass_cli.run import export, predictors

    run, data = calibrated_run
    files = sorted(os.path.join(data, c, n) for c in ("blue", "red") for n in os.listdir(os.path.join(data, c)))[:24]
    from imgclass_cli.run.inference import logits_function

    reference = predictors.load(run)
    x = export.load_images(files, reference.image_size)
    # The calibrated probabilities, from the logits and the temperature config.json records.
    t = json.load(open(os.path.join(run, "config.json")))["calibration"]["temperature"]
    logits = logits_function(reference.model)(x).numpy()[0]
    want = cal.softmax(logits, t)
    assert np.abs(cal.softmax(logits) - want).max() > 0.01  # the temperature changes these numbers
    np.testing.assert_allclose(reference.predict(x), want, atol=1e-5)
    for fmt in ("savedmodel", "tflite"):
        out = tmp_path / fmt
        r = runner.invoke(app, ["export", run, "--to", fmt, "--out", str(out), "--parity", "10"])
        assert r.exit_code == 0, r.output
        target = str(out / "model.tflite") if fmt == "tflite" else str(out)
        np.testing.assert_allclose(predictors.load(target).predict(x), want, atol=2e-3)  # what predict uses


def test_a_tampered_temperature_is_refused(runner, trained_run, test_dir, tmp_path):
    import shutil

    from imgclass_cli.model.parts import parts
    from imgclass_cli.run import rundir

    run = str(tmp_path / "run")
    shutil.copytree(trained_run, run)
    model, _ = rundir.load(run)
    parts(model).set_temperature(-1.0)  # would turn every probability around
    model.save(os.path.join(run, "model.keras"))
    for args in (["evaluate", run, test_dir, "--out", str(tmp_path / "m.json")], ["predict", run, test_dir]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and f"Error: {run}/model.keras: its temperature is -1.0, outside 0.05 to 20" in r.stderr
    assert not (tmp_path / "m.json").exists()
