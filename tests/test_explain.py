"""`imgclass explain`: one picture, one heatmap and one record per image; the same decode and confidences as predict;
names that cannot collide or hide; nothing of the user's overwritten; bad input refused before anything is written."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
from PIL import Image

from imgclass_cli import fs
from imgclass_cli.cli import app


def records(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_one_png_npy_and_record_per_image_with_predicts_decode(runner, trained_run, test_dir, tmp_path):
    inputs = tmp_path / "in"
    (inputs / "a").mkdir(parents=True)
    (inputs / "b").mkdir()
    shutil.copy(os.path.join(test_dir, "red", "img001.png"), inputs / "a" / "same.png")
    shutil.copy(os.path.join(test_dir, "blue", "img001.png"), inputs / "b" / "same.png")  # the same file name
    hostile = inputs / ".<b>x\ny.png"  # hidden, markup, a newline
    shutil.copy(os.path.join(test_dir, "green", "img002.png"), hostile)
    rotated = inputs / "rotated.jpg"
    arr = np.zeros((24, 40, 3), np.uint8)  # stored 40 wide, 24 high
    arr[:, :20] = (220, 20, 20)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # shown turned 90 degrees: 24 wide, 40 high
    im.save(rotated, "JPEG", quality=95, exif=exif)
    paths = [str(inputs / "a" / "same.png"), str(inputs / "b" / "same.png"), str(hostile), str(rotated)]
    out = tmp_path / "out"
    r = runner.invoke(app, ["explain", trained_run, *paths, "--out", str(out)])
    assert r.exit_code == 0, r.output
    recs = records(r)
    assert [x["path"] for x in recs] == paths
    assert [os.path.basename(x["png"]) for x in recs] == ["same.png", "same-2.png", "__b_x_y.png", "rotated.png"]
    assert "wrote 4 heatmap(s)" in r.stderr
    # explain computes in float32 (its gradients); predict's auto may be bfloat16 on this machine.
    predicted = records(runner.invoke(app, ["predict", trained_run, *paths, "-f", "jsonl", "--precision", "float32"]))
    for rec, pred in zip(recs, predicted):
        assert rec["label"] == pred["label"] == rec["class"]
        assert abs(rec["confidence"] - pred["confidence"]) < 1e-5
        heat = np.load(rec["npy"])
        with Image.open(rec["path"]) as src:
            w, h = src.size
        if rec["path"].endswith(".jpg"):
            w, h = h, w  # EXIF orientation 6: the upright image is turned
        assert heat.shape == (h, w) and heat.dtype == np.float32
        assert 0 <= heat.min() and heat.max() == np.float32(1.0) or heat.max() == 0
        row, col = rec["peak"]
        assert 0 <= row < h and 0 <= col < w and heat[row, col] >= heat.max() - 0.05
        assert open(rec["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted([*fs.owned_files(str(out)), ".imgclass"]) == sorted(os.listdir(out))  # 8 files, each listed


def test_class_option_and_an_unknown_class(runner, trained_run, test_dir, tmp_path):
    image = os.path.join(test_dir, "red", "img001.png")
    r = runner.invoke(app, ["explain", trained_run, image, "--class", "blue", "-o", str(tmp_path / "o"), "-q"])
    assert r.exit_code == 0, r.output
    (rec,) = records(r)
    assert rec["class"] == "blue" and rec["label"] != "blue" and rec["class_confidence"] < rec["confidence"]
    r = runner.invoke(app, ["explain", trained_run, image, "--class", "blu", "-o", str(tmp_path / "p")])
    assert r.exit_code == 2
    assert r.stderr.startswith(f"Error: --class blu: not a class of {trained_run} (did you mean blue? its classes: "
                               "blue, green, red)")
    assert not (tmp_path / "p").exists()


def test_a_users_file_is_never_replaced_and_its_own_files_are(runner, trained_run, test_dir, tmp_path):
    image = os.path.join(test_dir, "red", "img001.png")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "img001.npy").write_bytes(b"my own data")
    r = runner.invoke(app, ["explain", trained_run, image, "-o", str(out)])
    assert r.exit_code == 2
    assert "img001.npy: exists and was not written by imgclass; refusing to overwrite it" in r.stderr
    assert (out / "img001.npy").read_bytes() == b"my own data" and sorted(os.listdir(out)) == ["img001.npy"]
    (out / "img001.npy").unlink()
    for _ in range(2):  # the second run replaces what the first wrote
        r = runner.invoke(app, ["explain", trained_run, image, "-o", str(out), "-q"])
        assert r.exit_code == 0, r.output


def test_an_undecodable_image_is_one_line_and_nothing_is_written(runner, trained_run, test_dir, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(open(os.path.join(test_dir, "red", "img001.png"), "rb").read()[:60])  # cut inside the pixels
    good = os.path.join(test_dir, "red", "img002.png")
    for args, message in (([good, str(bad)], f"Error: {bad}: cannot decode"),
                          ([str(tmp_path / "missing.png")], f"Error: {tmp_path / 'missing.png'}: no such file")):
        r = runner.invoke(app, ["explain", trained_run, *args, "-o", str(tmp_path / "out")])
        assert r.exit_code == 2 and r.stdout == ""
        assert r.stderr.startswith(message) and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "out").exists()


def test_by_default_it_writes_into_the_run_which_stays_replaceable(runner, trained_run, test_dir, tmp_path):
    from imgclass_cli._tf import keras
    from imgclass_cli.model.layers import TemperatureSoftmax

    run = str(tmp_path / "run")
    shutil.copytree(trained_run, run)
    r = runner.invoke(app, ["explain", run, os.path.join(test_dir, "green"), "-q"])
    assert r.exit_code == 0, r.output
    assert len(records(r)) == 6 and len(os.listdir(os.path.join(run, "explain"))) == 13  # 6 x 2 and the marker
    assert fs.is_owned(run, fs.RUN)  # train --force may still replace the run
    # A model with no convolutional feature map: one line naming the model file.
    K = keras()
    inp = K.Input((None, None, 3))
    x = K.layers.Flatten()(K.layers.Rescaling(1 / 255)(K.layers.Resizing(32, 32)(inp)))
    K.Model(inp, TemperatureSoftmax()(K.layers.Dense(3)(x)), name="flat").save(os.path.join(run, "model.keras"))
    r = runner.invoke(app, ["explain", run, os.path.join(test_dir, "green", "img001.png")])
    assert r.exit_code == 2 and r.stderr.startswith(
        f"Error: {os.path.join(run, 'model.keras')}: Grad-CAM cannot explain flat: has no convolutional feature map")
