"""One tool, one vocabulary (issue 10 item 12): --format always means the format of stdout, from one set of names;
usage lines and help in one style; a bad value (typed, or from an environment variable) is one line that names
where it came from, what is accepted, and echoes it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import typer

from imgclass_cli.cli import app

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROUP = typer.main.get_command(app)
COMMANDS = sorted(GROUP.commands)


def _options(command):
    return [p for p in GROUP.commands[command].params if p.param_type_name == "option"]


def _choices(param) -> list[str]:
    return [str(getattr(c, "value", c)) for c in param.type_descriptor.choices]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


def test_usage_lines_and_help_in_one_style(runner):
    usages = {}
    for command in ["", *COMMANDS]:
        r = runner.invoke(app, [command, "--help"] if command else ["--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0, r.output
        usages[command] = r.stdout.splitlines()[0].replace("Usage: root", "Usage: imgclass")  # CliRunner's name
        text = re.sub(r"\bx?<=x?\b", "", r.stdout)  # Typer's ranges, [0.0<=x<=0.9], are the one < allowed
        for bad in ("{", "<", "[str]", "list["):
            assert bad not in text, f"imgclass {command} --help: {bad!r} in\n{r.stdout}"
    # Every option that takes a value shows a placeholder in capitals (N, PATH, NAME...) or its choices [a|b].
    for command in COMMANDS:
        for p in _options(command):
            if not p.is_flag and not p.hidden:
                assert re.fullmatch(r"[A-Z][A-Z_.=,:/\[\]]*|\[[a-z0-9-]+(\|[a-z0-9-]+)*\]", p.metavar), (command, p.opts)
    assert usages["predict"] == "Usage: imgclass predict [OPTIONS] RUN PATH..."
    assert usages["prepare"] == "Usage: imgclass prepare [OPTIONS] SRC [OUT]"
    assert usages["evaluate"] == "Usage: imgclass evaluate [OPTIONS] RUN DATA"
    assert usages["train"] == usages["finetune"].replace("finetune", "train") == "Usage: imgclass train [OPTIONS] DATA"
    assert usages["export"] == "Usage: imgclass export [OPTIONS] RUN"
    # The same in a real process, as a user sees it.
    out = subprocess.run([sys.executable, "-m", "imgclass_cli", "predict", "--help"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert out.stdout.splitlines()[0] == usages["predict"]
    r = runner.invoke(app, ["predict", "run"])
    assert "Missing argument 'PATH'" in r.stderr and r.exit_code == 2


def test_format_always_means_stdout_from_one_set_of_names():
    from imgclass_cli.config import OutputFormat

    names = {f.value for f in OutputFormat}
    assert names == {"table", "json", "jsonl", "csv"}
    formats = {}
    for command in COMMANDS:
        for p in _options(command):
            if "--format" in p.opts and not p.hidden:
                assert p.opts == ["--format", "-f"], command
                assert set(_choices(p)) <= names and _choices(p)[0] == "table", command
                # Listed in OutputFormat's order, so help reads the same everywhere.
                assert _choices(p) == [n for n in OutputFormat.__members__ if n in _choices(p)], command
                formats[command] = _choices(p)
    assert formats == {"prepare": ["table", "json"], "evaluate": ["table", "json", "csv"], "audit": ["table", "json", "csv"],
                       "predict": ["table", "jsonl", "csv"], "backbones": ["table", "json", "csv"]}
    export = {o: p for p in _options("export") for o in p.opts}
    assert _choices(export["--to"]) == ["savedmodel", "tflite", "keras", "onnx"]
    assert "--format" not in export and not any(p.hidden for c in COMMANDS for p in _options(c))  # no aliases


def test_backbones_in_every_format(runner):
    r = runner.invoke(app, ["backbones", "-f", "json"])
    rows = json.loads(r.stdout)
    assert r.exit_code == 0 and {"name": "mobilenetv2", "keras": "MobileNetV2", "default_size": 224,
                                 "min_size": 32, "preprocess_input": "keras.applications.mobilenet_v2"} in rows
    r = runner.invoke(app, ["backbones", "--format", "csv"])
    lines = r.stdout.splitlines()
    assert lines[0] == "name,keras,default_size,min_size,preprocess_input" and len(lines) == len(rows) + 1
    r = runner.invoke(app, ["backbones"])
    assert "mobilenetv2" in r.stdout and "default size" in r.stdout


def test_export_takes_its_format_as_to_and_has_no_other_spelling(runner, tmp_path):
    for old in ("--format", "-f"):  # nothing has been released: no alias
        r = runner.invoke(app, ["export", str(tmp_path / "no-run"), old, "savedmodel"])
        assert r.exit_code == 2 and f"No such option: {old}" in r.stderr
    r = runner.invoke(app, ["export", str(tmp_path / "no-run"), "--to", "keras"])
    assert r.exit_code == 2 and "Warning" not in r.stderr
    r = runner.invoke(app, ["export", str(tmp_path / "no-run"), "--to", "pt"])
    assert r.exit_code == 2 and "'--to': must be one of savedmodel, tflite, keras, onnx; got pt" in r.stderr


# Every option that reads an environment variable, with a bad value: (command line, variable, value, what the
# message must say is accepted).
ENV_CASES = [
    (["train", "d"], "IMGCLASS_DEBUG", "maybe", "one of 1, 0, true, false, yes, no, on, off"),
    (["train", "d"], "IMGCLASS_IMAGE_SIZE", "4", "between 8 and 8192"),
    (["train", "d"], "IMGCLASS_BATCH_SIZE", "many", "an integer"),
    (["train", "d"], "IMGCLASS_EPOCHS", "0", "at least 1"),
    (["train", "d"], "IMGCLASS_SEED", "1.5", "an integer"),
    (["train", "d"], "IMGCLASS_QUIET", "maybe", "one of 1, 0, true, false, yes, no, on, off"),
    (["train", "d"], "IMGCLASS_TENSORBOARD", "x", "one of 1, 0, true, false, yes, no, on, off"),
    (["train", "d"], "IMGCLASS_ON_BAD_IMAGE", "ignore", "one of skip, fail"),
    (["train", "d"], "IMGCLASS_STRATEGY", "tpu", "one of auto, default, mirrored, multiworker"),
    (["finetune", "d"], "IMGCLASS_BACKBONE", "vgg61", "unknown backbone 'vgg61' (did you mean vgg19?)"),
    (["evaluate", "r", "d"], "IMGCLASS_EVALUATE_FORMAT", "jsonl", "one of table, json, csv"),
    (["evaluate", "r", "d"], "IMGCLASS_FORMAT", "xml", "one of table, json, csv"),
    (["predict", "r", "p"], "IMGCLASS_PREDICT_FORMAT", "json", "one of table, jsonl, csv"),
    (["predict", "r", "p"], "IMGCLASS_FORMAT", "xml", "one of table, jsonl, csv"),
    (["predict", "r", "p"], "IMGCLASS_TOP_K", "0", "between 1 and 100000"),
    (["evaluate", "r", "d"], "IMGCLASS_GALLERY", "-1", "at least 0"),
    (["train", "d"], "IMGCLASS_PRECISION", "fp8", "one of auto, float32, bfloat16, float16"),
    (["audit", "d"], "IMGCLASS_AUDIT_FORMAT", "jsonl", "one of table, json, csv"),
    (["audit", "d"], "IMGCLASS_FAIL_ON", "bogus", "a comma-separated list of label, leak, duplicate, quality (or all)"),
]


@pytest.mark.parametrize("args,var,value,accepted", ENV_CASES, ids=[f"{c[1]}={c[2]}" for c in ENV_CASES])
def test_a_bad_environment_variable_is_one_line_naming_it(runner, args, var, value, accepted):
    r = runner.invoke(app, args, env={var: value})
    assert r.exit_code == 2
    (line,) = _error_lines(r.stderr)
    assert f"environment variable {var} (sets --" in line and accepted in line, line
    if not accepted.startswith("unknown"):
        assert line.endswith(f"; got {value}"), line
    assert not re.search(r"\[\s*'", line), line  # no Python list repr such as ['IMGCLASS_A', 'IMGCLASS_B']


def test_every_environment_variable_is_tested():
    read = {v for c in COMMANDS for p in GROUP.commands[c].params for v in
            ([p.envvar] if isinstance(p.envvar, str) else p.envvar or [])}
    read |= {p.envvar for p in GROUP.params if isinstance(p.envvar, str)}
    # The gates: test_fail_under_from_environment_names_the_variable, test_fail_over_from_the_environment.
    assert read - {"IMGCLASS_FAIL_UNDER", "IMGCLASS_FAIL_OVER"} == {case[1] for case in ENV_CASES}


def test_fail_under_from_environment_names_the_variable(runner, trained_run, test_dir, tmp_path):
    r = runner.invoke(app, ["evaluate", trained_run, test_dir, "--out", str(tmp_path / "m.json")],
                      env={"IMGCLASS_FAIL_UNDER": "acuracy=0.9"})
    assert r.exit_code == 2
    (line,) = _error_lines(r.stderr)
    assert line.startswith("Error: IMGCLASS_FAIL_UNDER (--fail-under): unknown metric 'acuracy'"), line
    r = runner.invoke(app, ["evaluate", trained_run, test_dir, "--fail-under", "accuracy=1.5"])
    assert r.exit_code == 2 and "Error: --fail-under 'accuracy=1.5': thresholds are fractions between 0 and 1; " \
        "got 1.5" in r.stderr


def _ranged_cases():
    """Every option with a min or max, on every command: one value below the range, one above."""
    cases = []
    for command in COMMANDS:
        for p in _options(command):
            lo, hi = getattr(p, "min", None), getattr(p, "max", None)
            step = 1 if p.type_descriptor.annotation is int else 0.5
            if lo is not None:
                cases.append((command, p.opts[0], lo - step, "at least" if hi is None else "between"))
            if hi is not None:
                cases.append((command, p.opts[0], hi + step, "at most" if lo is None else "between"))
    return cases


RANGED = _ranged_cases()


def test_the_ranged_options_are_all_there():
    assert len(RANGED) >= 30 and {(c[0], c[1]) for c in RANGED} >= {
        ("train", "--val"), ("finetune", "--val"), ("prepare", "--val"), ("prepare", "--test"), ("train", "--epochs"),
        ("export", "--min-agreement"), ("export", "--parity"), ("predict", "--top-k"), ("train", "--image-size"),
        ("prepare", "--max-size"), ("finetune", "--aug-views"), ("train", "--label-smoothing")}


@pytest.mark.parametrize("command,option,value,bound", RANGED, ids=[f"{c[0]} {c[1]} {c[2]}" for c in RANGED])
def test_a_value_out_of_range_is_echoed(runner, command, option, value, bound):
    positional = {"train": ["d"], "finetune": ["d"], "evaluate": ["r", "d"], "predict": ["r", "p"], "export": ["r"],
                  "prepare": ["s", "o"], "explain": ["r", "i"], "audit": ["d"]}[command]
    r = runner.invoke(app, [command, *positional, option, str(value)])
    assert r.exit_code == 2
    (line,) = _error_lines(r.stderr)
    assert line.startswith(f"Error: Invalid value for '{option}'") and bound in line, line
    assert line.endswith(f"; got {value}"), line


@pytest.mark.parametrize("args,message", [
    (["train", "d", "--val", "1.5"], "Error: Invalid value for '--val': must be between 0.0 and 0.9; got 1.5"),
    (["predict", "r", "p", "-k", "0"], "Error: Invalid value for '--top-k' / '-k': must be between 1 and 100000; got 0"),
    (["train", "d", "--epochs", "ten"], "Error: Invalid value for '--epochs': must be an integer; got ten"),
    (["evaluate", "r", "d", "-f", "xml"], "Error: Invalid value for '--format' / '-f': must be one of table, json, "
                                          "csv; got xml"),
    (["train", "d", "--dropout", "nan%"], "Error: Invalid value for '--dropout': must be a number; got nan%"),
])
def test_value_errors_read_the_same_everywhere(runner, args, message):
    r = runner.invoke(app, args, env={"IMGCLASS_EPOCHS": "3"})
    assert r.exit_code == 2 and _error_lines(r.stderr) == [message]  # a flag names the flag, not its variable


def test_a_run_file_out_of_range_echoes_the_value_and_the_range():
    from imgclass_cli.config import TrainConfig
    from imgclass_cli.errors import ImgclassError

    with pytest.raises(ImgclassError) as e:
        TrainConfig.from_dict({"val_split": 1.5})
    assert e.value.message == "config.json: field options.val_split has an invalid value 1.5 (allowed: 0.0 to 0.9)"
