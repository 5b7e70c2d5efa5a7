"""evaluate --fail-under: parsing, close-match suggestions, exit 0 on pass and 3 on failure with the shortfall."""

from __future__ import annotations

import json

import pytest

from imgclass_cli.report import gates
from imgclass_cli.cli import app
from imgclass_cli.errors import EXIT_GATE, GateFailed, ImgclassError
from tests.conftest import COLOURS, make_class_folders

NAMES = ["blue", "green", "red"]


def test_parse_metrics_nested_keys_and_aliases():
    parsed = gates.parse("accuracy=0.9, f1_macro=0.85,top_k_accuracy.top_1=0.5,top_1=0.4,per_class.red.recall=0.7", NAMES)
    assert [(g.key, g.threshold) for g in parsed] == [
        ("accuracy", 0.9), ("f1_macro", 0.85), ("top_k_accuracy.top_1", 0.5), ("top_k_accuracy.top_1", 0.4),
        ("per_class.red.recall", 0.7),
    ]
    assert gates.parse("top_1_accuracy=0.5", NAMES)[0].key == "top_k_accuracy.top_1"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("acuracy=0.9", "did you mean accuracy"),
        ("f1_marco=0.9", "did you mean f1_macro"),
        ("top_k_accuracy.top_3=0.9", "unknown metric"),  # 3 classes: top-3 is always 1 and not reported
        ("per_class.purple.f1=0.5", "unknown metric"),
        ("accuracy", "expected METRIC=THRESHOLD"),
        ("accuracy=high", "not a number"),
        ("accuracy=90", "between 0 and 1"),
        (",", "no METRIC=THRESHOLD"),
    ],
)
def test_parse_errors_are_usage_errors(spec, message):
    with pytest.raises(ImgclassError) as e:
        gates.parse(spec, NAMES)
    assert message in e.value.message and e.value.exit_code == 2


def test_check_and_enforce_name_metric_and_shortfall():
    report = {"accuracy": 0.8, "f1_macro": 0.9, "top_k_accuracy": {"top_1": 0.8},
              "per_class": {"a.b": {"recall": 0.5}}}
    results = gates.check(report, [gates.Gate("accuracy", 0.85), gates.Gate("f1_macro", 0.85),
                                   gates.Gate("per_class.a.b.recall", 0.5)])
    assert [r.passed for r in results] == [False, True, True]
    with pytest.raises(GateFailed) as e:
        gates.enforce(results)
    assert e.value.exit_code == EXIT_GATE == 3
    assert "accuracy 0.8000 < 0.8500 (short by 0.0500)" in e.value.message and "f1_macro" not in e.value.message
    gates.enforce(results[1:])  # all pass: no exception


def test_fail_under_pass_exits_0(runner, trained_run, test_dir, tmp_path):
    r = runner.invoke(app, ["evaluate", trained_run, test_dir, "-f", "json", "--out", str(tmp_path / "m.json"),
                            "--fail-under", "accuracy=0.5,f1_macro=0.5,per_class.red.recall=0.3"])
    assert r.exit_code == 0, r.output
    assert "gate accuracy" in r.stderr and "ok" in r.stderr
    json.loads(r.stdout)  # gate lines never pollute the data on stdout


def test_fail_under_failure_exits_3_naming_metric_and_shortfall(runner, trained_run, tmp_path):
    # Swapped colours: the model calls these red images blue and vice versa, so accuracy is far below 0.5.
    data = make_class_folders(tmp_path / "swapped", per_class=4, seed=5,
                              classes={"red": COLOURS["blue"], "blue": COLOURS["red"]})
    out = tmp_path / "m.json"
    r = runner.invoke(app, ["evaluate", trained_run, data, "-f", "json", "--out", str(out),
                            "--fail-under", "accuracy=0.5,top_k_accuracy.top_1=0.0"])
    assert r.exit_code == 3, r.output
    report = json.loads(r.stdout)
    error = r.stderr.split("Error:")[1]
    assert "quality gate failed" in error and "accuracy" in error and "top_k_accuracy" not in error
    assert f"short by {0.5 - report['accuracy']:.4f}" in error
    assert out.exists() and (tmp_path / "misclassified.csv").exists()  # files are written before the gate decides


def test_fail_under_from_environment_and_typo_fails_before_evaluating(runner, trained_run, test_dir, tmp_path):
    r = runner.invoke(app, ["evaluate", trained_run, test_dir, "-f", "json", "--out", str(tmp_path / "m.json")],
                      env={"IMGCLASS_FAIL_UNDER": "accuracy=0.01"})
    assert r.exit_code == 0 and "gate accuracy" in r.stderr
    r = runner.invoke(app, ["evaluate", trained_run, test_dir, "--out", str(tmp_path / "n.json"),
                            "--fail-under", "acuracy=0.9"])
    assert r.exit_code == 2 and "did you mean accuracy" in r.stderr
    assert not (tmp_path / "n.json").exists()


# --- lower-is-better metrics: --fail-over (issue 21) ------------------------------------------------------------

def test_fail_over_caps_lower_is_better_metrics():
    parsed = gates.parse("ece=0.05, nll=0.7,brier_uncalibrated=1.5,seen_by_run.fraction=0,seen_by_run.train=3",
                         NAMES, "--fail-over", maximum=True)
    assert [(g.key, g.threshold, g.maximum) for g in parsed] == [
        ("ece", 0.05, True), ("nll", 0.7, True), ("brier_uncalibrated", 1.5, True), ("seen_by_run.fraction", 0.0, True),
        ("seen_by_run.train", 3.0, True)]
    report = {"ece": 0.08, "nll": 0.7, "brier_uncalibrated": 0.2, "seen_by_run": {"fraction": 0.25, "train": 3}}
    results = gates.check(report, parsed)
    assert [r.passed for r in results] == [False, True, True, False, True]  # equal to the maximum passes
    with pytest.raises(GateFailed) as e:
        gates.enforce(results)
    assert "ece 0.0800 > 0.0500 (over by 0.0300)" in e.value.message
    assert "seen_by_run.fraction 0.2500 > 0.0000 (over by 0.2500)" in e.value.message and "nll" not in e.value.message


@pytest.mark.parametrize(
    "spec, maximum, message",
    [
        # The opposite direction is an error that says what to write instead, never a gate that means the opposite.
        ("ece=0.05", False, "--fail-under: ece is better when lower, so a gate on it fails when it is above its "
                            "maximum: write --fail-over ece=THRESHOLD"),
        ("nll_uncalibrated=0.5", False, "write --fail-over nll_uncalibrated=THRESHOLD"),
        ("seen_by_run.fraction=0", False, "write --fail-over seen_by_run.fraction=THRESHOLD"),
        ("accuracy=0.9", True, "--fail-over: accuracy is better when higher, so a gate on it fails when it is below "
                               "its minimum: write --fail-under accuracy=THRESHOLD"),
        ("per_class.red.recall=0.5", True, "write --fail-under per_class.red.recall=THRESHOLD"),
        ("ece<=0.05", True, "expected METRIC=THRESHOLD, e.g. ece=0.05"),
        ("ecee=0.05", True, "did you mean ece"),
        ("ece=1.5", True, "thresholds are fractions between 0 and 1; got 1.5"),
        ("brier=2.5", True, "the threshold of brier is between 0 and 2; got 2.5"),
        ("nll=-1", True, "the threshold of nll is a number >= 0; got -1"),
        ("nll=inf", True, "the threshold of nll is a number >= 0; got inf"),
        ("seen_by_run.val=0.5", True, "seen_by_run.val counts images; the threshold is a whole number >= 0"),
    ],
)
def test_gate_direction_errors_say_what_to_write(spec, maximum, message):
    with pytest.raises(ImgclassError) as e:
        gates.parse(spec, NAMES, "--fail-over" if maximum else "--fail-under", maximum=maximum)
    assert message in e.value.message and e.value.exit_code == 2


def test_fail_over_on_the_command_line_and_from_the_environment(runner, trained_run, test_dir, tmp_path):
    r = runner.invoke(app, ["evaluate", trained_run, test_dir, "-f", "json", "--out", str(tmp_path / "a.json"),
                            "--fail-over", "ece=1,nll=36.1,prediction_collapse.share=1", "--fail-under", "accuracy=0.5"])
    assert r.exit_code == 0, r.output
    assert "gate ece" in r.stderr and "<= 1.0000 ok" in r.stderr and "gate accuracy" in r.stderr
    report = json.loads(r.stdout)
    assert [g.passed for g in gates.check(report, gates.parse("ece=0,prediction_collapse.share=0.2", NAMES,
                                                              maximum=True))] == [report["ece"] == 0, False]
    # The run's own training images, refused by IMGCLASS_FAIL_OVER: tests/test_confidence.py.
    r = runner.invoke(app, ["evaluate", trained_run, test_dir, "--out", str(tmp_path / "c.json")],
                      env={"IMGCLASS_FAIL_OVER": "accuracy=0.9"})
    assert r.exit_code == 2 and "Error: IMGCLASS_FAIL_OVER (--fail-over): accuracy is better when higher" in r.stderr
    assert not (tmp_path / "c.json").exists()  # refused before the evaluation
