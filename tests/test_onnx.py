"""export --to onnx with its parity check, predict on an ONNX export (folder or .onnx file), and the refusal of ONNX
files that are not an image classifier."""

from __future__ import annotations

import csv
import io
import json
import os

import numpy as np
import pytest

from imgclass_cli.cli import app

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def onnx_export(runner, trained_run, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("onnx") / "onnx")
    r = runner.invoke(app, ["export", trained_run, "--to", "onnx", "--out", out, "--parity", "30"])
    assert r.exit_code == 0, r.output
    return out, r


@pytest.mark.slow
def test_onnx_export_writes_the_model_and_passes_parity(onnx_export):
    out, r = onnx_export
    assert "top-1 agreement" in r.stdout
    meta = json.load(open(os.path.join(out, "export.json")))
    assert meta["format"] == "onnx" and meta["model"] == "model.onnx" and meta["resize"] == "squash"
    assert meta["parity"]["passed"] and meta["parity"]["agreement"] == 1.0 and meta["parity"]["max_abs_diff"] < 1e-4
    graph = onnx.load(os.path.join(out, "model.onnx")).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["probabilities"]


def _predict(runner, target, files, *extra):
    r = runner.invoke(app, ["predict", target, *files, "-f", "csv", *extra])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    return [row["label"] for row in rows], np.array([float(row["confidence"]) for row in rows]), r


@pytest.mark.slow
def test_predict_on_the_onnx_export_matches_the_run(runner, onnx_export, trained_run, test_dir):
    out, _ = onnx_export
    files = [os.path.join(test_dir, c, f"img00{i}.png") for c in ("red", "green", "blue") for i in (1, 2)]
    want, want_conf, _ = _predict(runner, trained_run, files, "--precision", "float32")
    for target in (out, os.path.join(out, "model.onnx")):  # the folder, and the bare file beside its labels
        got, conf, r = _predict(runner, target, files)
        assert got == want and np.abs(conf - want_conf).max() < 1e-4
        assert "precision float32 (the onnx model computes in float32, as it was exported)" in r.stderr


@pytest.mark.slow
def test_predict_refuses_a_precision_an_onnx_model_does_not_compute_in(runner, onnx_export, test_dir):
    r = runner.invoke(app, ["predict", onnx_export[0], test_dir, "--precision", "bfloat16"])
    assert r.exit_code == 2
    assert "--precision bfloat16: the onnx model computes in float32, as it was exported" in r.stderr


def _onnx_file(path, shape, elem=None):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", elem or TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", elem or TensorProto.FLOAT, shape)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    (path.parent / "labels.txt").write_text("a\nb\n")
    return str(path)


@pytest.mark.parametrize("shape, elem, found", [
    ([None, 10], None, "found x [None, 10] tensor(float)"),
    ([None, 32, 32, 1], None, "found x [None, 32, 32, 1] tensor(float)"),
    ([None, 3, 32, 32], None, "found x [None, 3, 32, 32] tensor(float)"),  # channels first
    ([None, 32, 32, 3], "uint8", "found x [None, 32, 32, 3] tensor(uint8)"),
])
def test_an_onnx_file_whose_input_is_not_an_image_batch_is_refused_in_one_line(runner, tmp_path, test_dir, shape,
                                                                               elem, found):
    from onnx import TensorProto

    model = _onnx_file(tmp_path / "m.onnx", shape, TensorProto.UINT8 if elem else None)
    r = runner.invoke(app, ["predict", model, test_dir])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert f"{model}: not an image classifier imgclass can feed: expected one float input of shape (batch, size, " \
           f"size, 3), {found}" in r.stderr


def test_a_file_that_is_not_onnx_is_refused(runner, tmp_path, test_dir):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"not a protobuf at all")
    (tmp_path / "labels.txt").write_text("a\nb\n")
    r = runner.invoke(app, ["predict", str(bad), test_dir])
    assert r.exit_code == 2 and f"{bad}: not an ONNX model ONNX Runtime can run" in r.stderr
