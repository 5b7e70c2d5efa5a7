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
