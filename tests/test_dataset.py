from __future__ import annotations

import os

import pytest
from PIL import Image

from imgclass_cli.data import dataset
from imgclass_cli.errors import ImgclassError
from tests.conftest import make_class_folders


def test_scan_finds_images_by_content_and_ignores_hidden(tmp_path):
    root = make_class_folders(tmp_path, per_class=6)
    Image.new("RGB", (5, 5)).save(tmp_path / "red" / "actually_png.jpg", format="PNG")
    (tmp_path / "red" / "notes.jpg").write_text("hello")
    (tmp_path / "red" / ".DS_Store").write_bytes(b"\0\0")
    (tmp_path / ".hidden_class").mkdir()
    ds = dataset.scan(root, val_split=0.25, seed=1)
    assert ds.class_names == ["blue", "green", "red"]
    paths = [s.path for split in ds.splits.values() for s in split]
    assert any(p.endswith("actually_png.jpg") for p in paths)
    assert not any(p.endswith(("notes.jpg", ".DS_Store")) for p in paths)
    assert [os.path.basename(p) for p, _ in ds.skipped] == ["notes.jpg"]


def test_stratified_split_is_seeded_and_stratified(tmp_path):
    root = make_class_folders(tmp_path, per_class=10)
    a = dataset.scan(root, val_split=0.2, seed=7)
    b = dataset.scan(root, val_split=0.2, seed=7)
    c = dataset.scan(root, val_split=0.2, seed=8)
    assert [s.path for s in a.splits["val"]] == [s.path for s in b.splits["val"]]
    assert [s.path for s in a.splits["val"]] != [s.path for s in c.splits["val"]]
    assert a.counts("val") == {"blue": 2, "green": 2, "red": 2}
    assert not {s.path for s in a.splits["val"]} & {s.path for s in a.splits["train"]}


def test_split_layout_with_validation_folder(tmp_path):
    make_class_folders(tmp_path / "train", per_class=4)
    make_class_folders(tmp_path / "validation", per_class=2)
    make_class_folders(tmp_path / "test", per_class=1)
    ds = dataset.scan(str(tmp_path), val_split=0.2, seed=42)
    assert ds.layout == "splits"
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 12, "val": 6, "test": 3}
    ev = dataset.scan_for_eval(str(tmp_path))
    assert ev.root.endswith("test") and len(ev.splits["eval"]) == 3
    assert dataset.scan_for_eval(str(tmp_path), "val").root.endswith("validation")


def test_val_class_missing_from_train_is_an_error(tmp_path):
    make_class_folders(tmp_path / "train", per_class=3, classes={"a": (1, 1, 1), "b": (9, 9, 9)})
    make_class_folders(tmp_path / "val", per_class=1, classes={"c": (5, 5, 5)})
    with pytest.raises(ImgclassError, match="c have no images in train"):
        dataset.scan(str(tmp_path), val_split=0.2, seed=42)


def test_too_small_for_a_split(tmp_path):
    root = make_class_folders(tmp_path, per_class=1)
    with pytest.raises(ImgclassError, match="--val 0"):
        dataset.scan(root, val_split=0.2, seed=42)
    assert len(dataset.scan(root, val_split=0, seed=42).splits["train"]) == 3
