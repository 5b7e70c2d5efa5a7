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
