"""prepare SRC OUT: splits, duplicates, links, manifest, re-use by every command, and --from-tfds."""

from __future__ import annotations

import csv
import json
import os
import shutil

import pytest
from PIL import Image

from imgclass_cli.config import PrepareConfig
from imgclass_cli.data import dataset, prepare, verify
from imgclass_cli.cli import app
from imgclass_cli.errors import ImgclassError
from tests.conftest import make_class_folders


def manifest_rows(out):
    return list(csv.DictReader(open(os.path.join(out, "manifest.csv"), encoding="utf-8")))


def test_split_is_stratified_seeded_and_byte_identical(tmp_path):
    src = make_class_folders(tmp_path / "src", per_class=10)
    a = prepare.prepare(src, str(tmp_path / "a"), PrepareConfig(seed=3))
    prepare.prepare(src, str(tmp_path / "b"), PrepareConfig(seed=3))
    prepare.prepare(src, str(tmp_path / "c"), PrepareConfig(seed=4))
    ma, mb, mc = (open(tmp_path / n / "manifest.csv", "rb").read() for n in "abc")
    assert ma == mb and ma != mc
    assert a.report["counts"] == {s: {"blue": n, "green": n, "red": n} for s, n in (("train", 8), ("val", 1), ("test", 1))}
    rows = manifest_rows(tmp_path / "a")
    assert list(rows[0]) == ["path", "class", "split", "sha256", "width", "height", "status", "reason", "orientation", "source"]
    r = rows[0]
    assert r["path"] == os.path.join(r["split"], r["class"], os.path.basename(r["source"]))
    assert (r["width"], r["height"], r["status"]) == ("20", "20", "ok") and len(r["sha256"]) == 64
    # Hardlinks by default: the same file, no copy.
    assert os.path.samefile(tmp_path / "a" / r["path"], os.path.join(src, r["source"]))


def test_duplicates_stay_together_and_are_reported(tmp_path):
    src = make_class_folders(tmp_path / "src", per_class=6, classes={"a": (200, 0, 0), "b": (0, 0, 200)})
    for i in range(5):
        shutil.copyfile(os.path.join(src, "a", "img000.jpg"), os.path.join(src, "a", f"copy{i}.jpg"))
    shutil.copyfile(os.path.join(src, "a", "img001.png"), os.path.join(src, "b", "mislabelled.png"))
    res = prepare.prepare(src, str(tmp_path / "out"), PrepareConfig(val=0.3, test=0.3, seed=0))
    rows = manifest_rows(tmp_path / "out")
    by_sha: dict[str, set] = {}
    for row in rows:
        by_sha.setdefault(row["sha256"], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in by_sha.values())  # exact copies never straddle splits
    d = res.report["duplicates"]
    assert sorted(d["within_class"][0]) == sorted(["a/img000.jpg"] + [f"a/copy{i}.jpg" for i in range(5)])
    assert d["across_classes"] == [["a/img001.png", "b/mislabelled.png"]]
    assert d["across_splits"] == []


def test_existing_layout_is_respected_and_leakage_reported(tmp_path):
    src = tmp_path / "src"
    make_class_folders(src / "train", per_class=6)
    make_class_folders(src / "validation", per_class=2, seed=5)
    shutil.copyfile(src / "train" / "red" / "img000.jpg", src / "validation" / "red" / "leak.jpg")
    res = prepare.prepare(str(src), str(tmp_path / "out"), PrepareConfig())
    assert res.report["counts"]["train"]["red"] == 6 and res.report["counts"]["val"]["red"] == 3
    assert "test" not in res.report["counts"]  # not carved unless asked for
    assert res.report["duplicates"]["across_splits"] == [["val: validation/red/leak.jpg", "train: train/red/img000.jpg"]] \
        or res.report["duplicates"]["across_splits"] == [["train: train/red/img000.jpg", "val: validation/red/leak.jpg"]]
    res = prepare.prepare(str(src), str(tmp_path / "out2"), PrepareConfig(test=0.5))
    assert res.report["counts"]["test"]["red"] == 3 and res.report["counts"]["val"]["red"] == 3


def test_copy_and_max_size(tmp_path):
    src = tmp_path / "src"
    os.makedirs(src / "wide")
    os.makedirs(src / "tall")
    Image.new("RGB", (200, 100), (10, 200, 10)).save(src / "wide" / "w.jpg", quality=95)
    Image.new("RGB", (30, 20), (10, 200, 10)).save(src / "wide" / "small.png")
    Image.new("RGB", (50, 150), (200, 10, 10)).save(src / "tall" / "t.png")
    Image.new("RGB", (50, 150), (200, 10, 20)).save(src / "tall" / "t2.png")
    out = tmp_path / "out"
    res = prepare.prepare(str(src), str(out), PrepareConfig(val=0, test=0, max_size=64))
    rows = {r["source"]: r for r in manifest_rows(out)}
    assert Image.open(out / rows["wide/w.jpg"]["path"]).size == (64, 32)
    assert Image.open(out / rows["tall/t.png"]["path"]).size == (21, 64)
    assert os.path.samefile(out / rows["wide/small.png"]["path"], src / "wide" / "small.png")  # small: linked
    assert res.report["downscaled"] == 3
    out2 = tmp_path / "out2"
    prepare.prepare(str(src), str(out2), PrepareConfig(val=0, test=0, copy=True))
    p = out2 / "train" / "wide" / "w.jpg"
    assert not os.path.samefile(p, src / "wide" / "w.jpg") and p.read_bytes() == (src / "wide" / "w.jpg").read_bytes()


def test_out_rules(tmp_path, runner):
    src = make_class_folders(tmp_path / "src", per_class=3)
    with pytest.raises(ImgclassError, match="outside the source folder"):
        prepare.prepare(src, os.path.join(src, "prepared"), PrepareConfig())
    out = tmp_path / "out"
    r = runner.invoke(app, ["prepare", src, str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert "3 images" not in r.stdout and "9 images, 3 classes" in r.stdout
    r = runner.invoke(app, ["prepare", src, str(out), "-q"])
    assert r.exit_code == 2 and "--force" in r.stderr
    assert runner.invoke(app, ["prepare", src, str(out), "-q", "--force"]).exit_code == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("x")
    r = runner.invoke(app, ["prepare", src, str(mine), "--force"])
    assert r.exit_code == 2 and "not a folder written by imgclass prepare" in r.stderr
    assert (mine / "keep.txt").read_text() == "x"
    r = runner.invoke(app, ["prepare", src])
    assert r.exit_code == 2 and "pass SRC and OUT" in r.stderr


def test_commands_use_the_manifest_without_decoding_again(tmp_path, monkeypatch):
    src = make_class_folders(tmp_path / "src", per_class=10)
    out = str(tmp_path / "out")
    prepare.prepare(src, out, PrepareConfig(seed=1))
    rows = manifest_rows(out)
    ds = dataset.scan(out, val_split=0.2, seed=42)
    assert ds.verified and ds.layout == "prepared" and ds.class_names == ["blue", "green", "red"]
    for split in ("train", "val", "test"):
        expected = sorted(os.path.join(out, r["path"]) for r in rows if r["split"] == split)
        assert sorted(s.path for s in ds.splits[split]) == expected
    ev = dataset.scan_for_eval(out)
    assert len(ev.splits["eval"]) == 3 and ev.root.endswith("test")
    assert len(dataset.scan_for_eval(out, "val").splits["eval"]) == 3

    def no_decode(*a, **k):
        raise AssertionError("a prepared folder must not be decoded again")

    monkeypatch.setattr(verify, "check_file", no_decode)
    monkeypatch.setattr(verify, "check_files", no_decode)
    warned = []
    verify.screen(ds, "skip", warned.append)
    assert warned == []
    os.remove(os.path.join(out, rows[0]["path"]))
    with pytest.raises(ImgclassError, match="missing; run imgclass prepare again"):
        dataset.scan(out, val_split=0.2, seed=42)


def test_json_report_lists_formats_sizes_and_imbalance(tmp_path, runner):
    src = make_class_folders(tmp_path / "src", per_class=3, classes={"a": (1, 2, 3)})
    make_class_folders(tmp_path / "src", per_class=9, classes={"b": (200, 2, 3)})
    r = runner.invoke(app, ["prepare", str(tmp_path / "src"), str(tmp_path / "out"), "--format", "json", "-q"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["imbalance_ratio"] == 3.0 and rep["per_class"] == {"a": 3, "b": 9}
    assert rep["formats"] == {"png": 8, "jpeg": 4}
    assert rep["sizes"]["width"] == {"min": 20, "median": 20, "max": 20} and rep["small"]["count"] == 12
    assert rep["decode"]["images"] == 12 and rep["decode"]["images_per_second"] > 0
    info = json.load(open(tmp_path / "out" / "prepare.json"))
    assert info["source"] == os.path.realpath(src) and info["options"]["seed"] == 42


def test_from_tfds_with_mock_data(tmp_path, runner):
    tfds = pytest.importorskip("tensorflow_datasets")
    out = tmp_path / "mnist"
    with tfds.testing.mock_data(num_examples=12):
        r = runner.invoke(app, ["prepare", "--from-tfds", "mnist:train", str(out)])
    assert r.exit_code == 0, r.output
    assert "wrote 12 train images of 10 classes of mnist:train" in r.stdout
    files = [os.path.join(d, f) for d, _, fs in os.walk(out / "train") for f in fs]
    assert len(files) == 12 and set(os.listdir(out / "train")) <= {str(i) for i in range(10)}
    assert Image.open(files[0]).size == (28, 28)


def test_from_tfds_offline_is_one_line(tmp_path, runner, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")

    def offline(self, *a, **k):
        raise ConnectionError("Failed to establish a new connection: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    r = runner.invoke(app, ["prepare", "--from-tfds", "beans", str(tmp_path / "beans"), "--data-dir", str(tmp_path / "d")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot download" in lines[0] and "--data-dir" in lines[0]
    assert not (tmp_path / "beans").exists()
    r = runner.invoke(app, ["prepare", "--from-tfds", "no_such_dataset_xyz", str(tmp_path / "x")])
    assert r.exit_code == 2 and "no_such_dataset_xyz" in r.stderr and "Traceback" not in r.output


def test_placeholder_and_odd_names_are_noted(tmp_path):
    src = make_class_folders(tmp_path / "src", per_class=3, classes={"ants": (1, 2, 3), "bees": (200, 2, 3)})
    Image.new("RGB", (30, 30), (128, 128, 128)).save(os.path.join(src, "ants", "imageNotFound.gif"))
    Image.new("RGB", (30, 30), (1, 2, 3)).save(os.path.join(src, "ants", "ant photos.jpg"))
    res = prepare.prepare(src, str(tmp_path / "out"), PrepareConfig())
    notes = {n["path"]: n["note"] for n in res.report["notes"]}
    assert "placeholder" in notes["ants/imageNotFound.gif"] and "spaces" in notes["ants/ant photos.jpg"]
    assert res.report["rare_formats"]["gif"] == ["ants/imageNotFound.gif"]
    rows = {r["source"]: r for r in manifest_rows(tmp_path / "out")}
    assert rows["ants/ant photos.jpg"]["status"] == "ok" and os.path.exists(tmp_path / "out" / rows["ants/ant photos.jpg"]["path"])


def test_max_size_rescues_a_jpeg_too_large_to_decode(tmp_path):
    src = make_class_folders(tmp_path / "src", per_class=2, classes={"a": (1, 2, 3), "b": (200, 2, 3)})
    Image.new("L", (8200, 8200), 90).save(os.path.join(src, "a", "huge.jpg"), quality=50)  # 67 megapixels
    res = prepare.prepare(src, str(tmp_path / "plain"), PrepareConfig(val=0, test=0))
    assert [b["path"] for b in res.report["bad"]] == ["a/huge.jpg"] and "megapixel limit" in res.report["bad"][0]["reason"]
    res = prepare.prepare(src, str(tmp_path / "small"), PrepareConfig(val=0, test=0, max_size=64))
    assert res.report["bad"] == []
    row = {r["source"]: r for r in manifest_rows(tmp_path / "small")}["a/huge.jpg"]
    assert (row["status"], row["width"], row["height"]) == ("ok", "8200", "8200")
    assert Image.open(tmp_path / "small" / row["path"]).size == (64, 64)


def test_no_readable_image_is_exit_2_after_the_report(tmp_path, runner):
    os.makedirs(tmp_path / "src" / "a")
    (tmp_path / "src" / "a" / "x.jpg").write_text("not a picture")
    r = runner.invoke(app, ["prepare", str(tmp_path / "src"), str(tmp_path / "out"), "-f", "json", "-q"])
    assert r.exit_code == 2 and "none of its 1 file(s) is a readable image" in r.stderr
    assert json.loads(r.stdout)["bad"][0]["path"] == "a/x.jpg"
