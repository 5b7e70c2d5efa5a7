"""The one splitter (data/holdout.py): train, finetune and prepare hold out the same images for the same fraction and
seed, copies of a picture never straddle train and val, and --shard parts are every input once, in order."""

from __future__ import annotations

import csv
import os
import shutil

import pytest

from imgclass_cli.config import PrepareConfig
from imgclass_cli.data import dataset, holdout, prepare
from imgclass_cli.run.inference import take_shard
from tests.conftest import make_class_folders


def _names(samples, root) -> set[str]:
    return {os.path.relpath(s.path, root) for s in samples}


def _manifest_split(out, split) -> set[str]:
    rows = csv.DictReader(open(os.path.join(out, "manifest.csv"), encoding="utf-8"))
    return {r["source"] for r in rows if r["split"] == split}


def test_copies_inside_a_class_never_straddle_train_and_val(tmp_path):
    """The measured leak: photos copied once inside their class were split apart by train's old splitter."""
    root = make_class_folders(tmp_path / "d", per_class=12, seed=5)
    for cls in ("blue", "green"):
        for name in sorted(os.listdir(os.path.join(root, cls)))[:8]:
            stem, ext = os.path.splitext(name)
            shutil.copyfile(os.path.join(root, cls, name), os.path.join(root, cls, f"{stem}-copy{ext}"))
    for seed in range(6):
        ds = dataset.scan(root, val_split=0.3, seed=seed)
        train, val = _names(ds.splits["train"], root), _names(ds.splits["val"], root)
        assert val and not train & val
        for name in val:
            stem, ext = os.path.splitext(name)
            twin = stem[:-5] + ext if stem.endswith("-copy") else f"{stem}-copy{ext}"
            assert twin not in train, (seed, name)


def test_train_and_prepare_hold_out_the_same_validation_images_for_the_same_val_and_seed(tmp_path):
    root = make_class_folders(tmp_path / "d", per_class=11, seed=2)
    shutil.copyfile(os.path.join(root, "red", "img000.jpg"), os.path.join(root, "red", "zz-copy.jpg"))
    for seed in (1, 42):
        by_train = _names(dataset.scan(root, val_split=0.25, seed=seed).splits["val"], root)
        out = str(tmp_path / f"prep{seed}")
        prepare.prepare(root, out, PrepareConfig(val=0.25, test=0.0, seed=seed))
        assert _manifest_split(out, "val") == by_train
        # A prepared folder without a val split, split at train time: the same images again.
        unsplit = str(tmp_path / f"unsplit{seed}")
        prepare.prepare(root, unsplit, PrepareConfig(val=0.0, test=0.0, seed=seed))
        ds = dataset.scan(unsplit, val_split=0.25, seed=seed)
        rows = {os.path.join(unsplit, r["path"]): r["source"]
                for r in csv.DictReader(open(os.path.join(unsplit, "manifest.csv"), encoding="utf-8"))}
        assert {rows[s.path] for s in ds.splits["val"]} == by_train


def test_the_validation_set_itself_changes_with_the_seed(tmp_path):
    src = make_class_folders(tmp_path / "src", per_class=10)
    vals = []
    for seed in (3, 4, 3):
        out = str(tmp_path / f"p{len(vals)}")
        prepare.prepare(src, out, PrepareConfig(seed=seed))
        vals.append(_manifest_split(out, "val"))
    assert vals[0] == vals[2] and vals[0] != vals[1]
    assert len(vals[0]) == len(vals[1]) == 3  # one per class, whatever the seed


def test_holdout_counts_round_half_up_per_class_and_keep_one_for_train():
    assert holdout.holdout_counts(16, 0.2, 0.0) == (3, 0)
    assert holdout.holdout_counts(10, 0.1, 0.1) == (1, 1)
    assert holdout.holdout_counts(2, 0.5, 0.5) == (1, 0)
    assert holdout.holdout_counts(1, 0.9, 0.0) == (0, 0)


def test_content_keys_read_only_files_whose_size_another_shares(tmp_path):
    (tmp_path / "a").write_bytes(b"same")
    (tmp_path / "b").write_bytes(b"same")
    (tmp_path / "c").write_bytes(b"diff")  # same size, other bytes
    (tmp_path / "d").write_bytes(b"unique size")
    keys = holdout.content_keys([str(tmp_path / n) for n in "abcd"])
    assert keys[0] == keys[1] != keys[2] and keys[3] == "size:11"


@pytest.mark.parametrize("n", range(1, 6))
def test_shard_parts_together_are_every_input_once_in_order(n):
    for m in range(21):
        items = [f"img{i:02d}.png" for i in range(m)][::-1]  # given in another order than the parts' (sorted)
        parts = [take_shard(iter(items), (i, n)) for i in range(1, n + 1)]
        assert all(total == m for _, total in parts)
        joined = [x for part, _ in parts for x in part]
        assert joined == sorted(items), (m, n)
        sizes = [len(part) for part, _ in parts]
        assert max(sizes) - min(sizes) <= 1, (m, n)
