"""prepare --tfrecord (shards read back with the same images, labels, paths and order as the loose files; a
folder on another file system through tf.io.gfile) and predict --shard I/N."""

from __future__ import annotations

import csv
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from imgclass_cli import fs
from imgclass_cli.cli import app
from imgclass_cli.config import PrepareConfig
from imgclass_cli.data import dataset, prepare, tfrecord
from imgclass_cli.data.imagefile import probe_bytes
from tests.conftest import make_class_folders


def manifest_rows(out):
    return list(csv.DictReader(open(os.path.join(out, "manifest.csv"), encoding="utf-8")))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The same source prepared twice: loose (links) and as TFRecord shards of ~4 KB (several per split)."""
    root = tmp_path_factory.mktemp("tfr")
    src = make_class_folders(root / "src", per_class=14, seed=3)
    loose, records = str(root / "loose"), str(root / "records")
    prepare.prepare(src, loose, PrepareConfig(seed=5))
    result = prepare.prepare(src, records, PrepareConfig(seed=5, tfrecord=True, shard_size=4000))
    return src, loose, records, result


def test_round_trip_same_images_labels_and_paths(prepared):
    src, loose, records, result = prepared
    shards = result.report["tfrecord"]["shards"]
    assert shards["train"] > 2 and set(shards) == {"train", "val", "test"}
    names = sorted(n for n in os.listdir(records) if n.endswith(".tfrecord"))
    assert names == sorted(tfrecord.shard_name(s, k, n) for s, n in shards.items() for k in range(n))
    # Nothing but the shards and the manifest: no class folders; the marker lists every shard (prepare --force
    # may replace the folder, nothing else).
    assert set(os.listdir(records)) == {*names, "manifest.csv", "prepare.json", fs.MARKER}
    assert fs.is_owned(records, fs.PREPARED)
    a, b = manifest_rows(loose), manifest_rows(records)
    assert [{k: r[k] for k in a[0]} for r in b] == a  # the loose manifest's columns, row for row
    assert list(b[0])[-4:] == tfrecord.COLUMNS
    # Every record holds the source file's exact bytes, its label and source path, in the manifest's order.
    got = {}
    for split in ("train", "val", "test"):
        data = dataset.scan_for_eval(records, split)
        # The shards, read in parallel, give the records back in the manifest's order.
        assert [s.path for s, _ in tfrecord.iter_contents(data.splits["eval"])] == [s.path for s in data.splits["eval"]]
        for s, contents in tfrecord.iter_contents(data.splits["eval"]):
            got[os.path.relpath(s.path, records)] = (contents, data.class_names[s.label], s.record.source)
    assert len(got) == len(a)
    for r in a:
        contents, label, source = got[r["path"]]
        assert contents == open(os.path.join(loose, r["path"]), "rb").read()
        assert label == r["class"] and source == os.path.join(os.path.realpath(src), r["source"])
    # The training view of both folders: the same samples (paths inside the folder), labels and order.
    x, y = (dataset.scan(p, val_split=0.2, seed=5) for p in (loose, records))
    for split in ("train", "val", "test"):
        assert [(os.path.relpath(s.path, loose), s.label) for s in x.splits[split]] == \
               [(os.path.relpath(s.path, records), s.label) for s in y.splits[split]]


def test_max_size_copies_are_stored_downscaled(tmp_path):
    src = make_class_folders(tmp_path / "src", per_class=4, seed=1)
    out = str(tmp_path / "out")
    prepare.prepare(src, out, PrepareConfig(seed=1, tfrecord=True, max_size=12))
    rows = manifest_rows(out)
    assert {(r["width"], r["stored_width"], r["stored_height"]) for r in rows} == {("20", "12", "12")}
    data = dataset.scan_for_eval(out, "train")
    assert {probe_bytes(c).width for _, c in tfrecord.iter_contents(data.splits["eval"])} == {12}


def copy_to_ram(folder: str, name: str) -> str:
    """The folder copied to TensorFlow's in-memory file system: a path outside the local disk, read through
    tf.io.gfile exactly as gs:// would be."""
    import tensorflow as tf

    remote = f"ram://imgclass-test-{os.getpid()}/{name}"
    tf.io.gfile.makedirs(remote)
    for entry in os.listdir(folder):
        if not entry.startswith("."):
            tf.io.gfile.copy(os.path.join(folder, entry), f"{remote}/{entry}", overwrite=True)
    return remote


@pytest.mark.slow
def test_training_on_records_gives_the_same_metrics_as_on_the_files(runner, prepared, tmp_path):
    """Same seed, same data: the loose files, the local TFRecord shards and the shards on another file system
    (ram://) train to the same history, validation metrics and split.csv."""
    _, loose, records, _ = prepared
    remote = copy_to_ram(records, "train")
    runs = {}
    for name, data in (("loose", loose), ("records", records), ("remote", remote)):
        out = str(tmp_path / name)
        result = runner.invoke(app, ["train", data, "--arch", "simple-cnn", "--image-size", "32", "--epochs", "2",
                                     "--batch-size", "8", "--out", out, "--quiet"])
        assert result.exit_code == 0, result.output
        runs[name] = out
    history = {k: open(os.path.join(v, "history.csv")).read() for k, v in runs.items()}
    assert history["loose"] == history["records"] == history["remote"]
    metrics = {k: json.load(open(os.path.join(v, "metrics.json"))) for k, v in runs.items()}
    for k in ("accuracy", "f1_macro", "confusion_matrix", "num_samples"):
        assert metrics["loose"][k] == metrics["records"][k] == metrics["remote"][k]
    assert json.load(open(os.path.join(runs["remote"], "config.json")))["data"] == remote  # not CWD/ram:/...
    split = {k: open(os.path.join(v, "split.csv")).read() for k, v in runs.items()}
    assert split["loose"] == split["records"] == split["remote"]
    # export finds the run's validation images among the records (no files to open in a TFRecord folder)
    result = runner.invoke(app, ["export", runs["records"], "--to", "keras", "--parity", "8",
                                 "--out", str(tmp_path / "export"), "--quiet"])
    assert result.exit_code == 0, result.output
    val = [r for r in csv.DictReader(open(os.path.join(runs["records"], "split.csv"))) if r["split"] == "val"]
    assert json.load(open(tmp_path / "export" / "export.json"))["parity"]["images"] == min(8, len(val)) > 0


def test_evaluate_and_predict_read_a_folder_outside_the_local_disk(runner, trained_run, prepared, tmp_path):
    _, loose, records, _ = prepared
    remote = copy_to_ram(records, "eval")
    evals = []
    for data in (loose, remote):
        out = str(tmp_path / f"eval-{len(evals)}.json")
        result = runner.invoke(app, ["evaluate", trained_run, data, "--format", "json", "--out", out, "--quiet"])
        assert result.exit_code == 0, result.output
        evals.append(json.load(open(out)))
    assert evals[0]["split"] == evals[1]["split"] == "test" and evals[1]["data"] == remote + "/test"
    for k in ("accuracy", "f1_macro", "confusion_matrix", "num_samples"):
        assert evals[0][k] == evals[1][k]
    # predict on the remote folder: every record, named as inside the folder, with its source and shard
    result = runner.invoke(app, ["predict", trained_run, remote, "--format", "jsonl", "--quiet"])
    assert result.exit_code == 0, result.output
    recs = [json.loads(line) for line in result.stdout.splitlines()]
    rows = manifest_rows(records)
    assert len(recs) == len(rows) and all(r["status"] == "ok" for r in recs)
    assert {r["path"] for r in recs} == {f"{remote}/{row['path']}" for row in rows}
    assert all(r["shard"].startswith(remote + "/") and os.path.isabs(r["source"]) for r in recs)


def _predict(runner, run, args, shard=None) -> list[dict]:
    extra = ["--shard", shard] if shard else []
    result = runner.invoke(app, ["predict", run, *args, "--format", "jsonl", "--top-k", "3", "-q", *extra])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def assert_same_predictions(a: list[dict], b: list[dict]) -> None:
    """Same records in the same order, same labels; scores equal up to float32 rounding (a batch of other
    images changes their last bits: measured 3e-8)."""
    assert [(r["path"], r["status"], r["label"], [e["label"] for e in r["top_k"]]) for r in a] == \
           [(r["path"], r["status"], r["label"], [e["label"] for e in r["top_k"]]) for r in b]
    for x, y in zip(a, b):
        assert [e["score"] for e in x["top_k"]] == pytest.approx([e["score"] for e in y["top_k"]], abs=1e-6)


def test_predict_shards_together_equal_one_job(runner, trained_run, test_dir, data_dir, prepared):
    """N jobs of --shard I/N: together every input once, the same records and probabilities as one job."""
    _, _, records, _ = prepared
    args = [test_dir, data_dir, os.path.join(test_dir, "red")]  # red/ twice: duplicates count once with --shard
    whole = _predict(runner, trained_run, args)
    parts = [_predict(runner, trained_run, args, f"{i}/3") for i in (1, 2, 3)]
    unique = sorted({r["path"]: r for r in whole}.values(), key=lambda r: r["path"])
    assert len(unique) == len(whole) - 6  # the 6 red images given twice
    # Parts 1..3, concatenated, are the single job's records sorted by path, without the duplicates.
    assert_same_predictions([r for p in parts for r in p], unique)
    sizes = sorted(len(p) for p in parts)
    assert sizes[-1] - sizes[0] <= 1
    # The records of a TFRecord folder are split the same way.
    whole = sorted(_predict(runner, trained_run, [records]), key=lambda r: r["path"])
    parts = [_predict(runner, trained_run, [records], f"{i}/3") for i in (1, 2, 3)]
    assert all(parts)
    assert_same_predictions(sorted((r for p in parts for r in p), key=lambda r: r["path"]), whole)


def test_predict_shard_beyond_the_inputs_is_empty_not_an_error(runner, trained_run, test_dir):
    one = os.path.join(test_dir, "red", sorted(os.listdir(os.path.join(test_dir, "red")))[0])
    result = runner.invoke(app, ["predict", trained_run, one, "--format", "csv", "--shard", "3/4"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["path,status,label,confidence,error"]
    assert "no inputs in this part (1 input(s) in all" in result.stderr


@pytest.mark.parametrize("value, message", [
    ("0/3", "must be I/N with 1 <= I <= N, e.g. 2/4 for the second of 4 parts (I counts from 1: a 0-based index k "
            "is --shard k+1/N); got 0/3"),
    ("4/3", "must be I/N with 1 <= I <= N, e.g. 2/4 for the second of 4 parts; got 4/3"), ("2", "; got 2"),
    ("a/b", "; got a/b"),
])
def test_predict_shard_is_validated(runner, trained_run, test_dir, value, message):
    result = runner.invoke(app, ["predict", trained_run, test_dir, "--shard", value])
    assert result.exit_code == 2 and "Error: Invalid value for '--shard': " in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--shard-size", "0"], "Invalid value for '--shard-size': must be a size between 1 KB and 1000 GB, e.g. 100MB, "
                            "512KB or 1GB; got 0"), (["--shard-size", "lots"], "; got lots"),
    (["--copy"], "--copy has no effect with --tfrecord"),
])
def test_prepare_tfrecord_options_are_validated(runner, data_dir, tmp_path, args, message):
    result = runner.invoke(app, ["prepare", data_dir, str(tmp_path / "out"), "--tfrecord", *args])
    assert result.exit_code == 2 and message in result.stderr
    assert not os.path.exists(tmp_path / "out")


def test_a_bad_record_is_named_by_shard_and_source(runner, trained_run, tmp_path):
    """prepare checked every image; a shard damaged later, or a record whose image will not decode, stops
    evaluate with one line naming the shard (and the source file of the record)."""
    src = make_class_folders(tmp_path / "src", per_class=4, seed=2)
    out = str(tmp_path / "out")
    prepare.prepare(src, out, PrepareConfig(seed=2, tfrecord=True, val=0.0, test=0.5))
    rows = [r for r in manifest_rows(out) if r["split"] == "test"]
    shard = os.path.join(out, rows[0]["shard"])
    broken = tmp_path / "broken.jpg"  # a valid JPEG header, then nothing: passes the header probe, fails to decode
    jpeg = next(r for r in rows if r["source"].endswith(".jpg"))
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    broken.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    test_rows = [r for r in rows if r["shard"] == jpeg["shard"]]
    recs = [tfrecord.Record(str(broken) if r is jpeg else os.path.join(src, r["source"]), 0, r["class"], r["source"],
                            r["path"], 1) for r in test_rows]
    os.remove(os.path.join(out, jpeg["shard"]))
    write_dir = tmp_path / "w"
    write_dir.mkdir()
    n = int(jpeg["shard"].split("-of-")[1][:5])
    # Rewrite the shard with the broken image in the same place (one shard per split here: n == 1).
    assert n == 1
    tfrecord.write_split(str(write_dir), "test", recs, 10**9)
    os.rename(write_dir / jpeg["shard"], os.path.join(out, jpeg["shard"]))
    result = runner.invoke(app, ["evaluate", trained_run, out, "--out", str(tmp_path / "m.json"), "-q"])
    assert result.exit_code == 2, result.output
    assert jpeg["shard"] in result.stderr and jpeg["source"] in result.stderr and "cannot decode" in result.stderr
    # A damaged shard (a flipped byte): its checksum fails, and the message names the file.
    data = bytearray(open(shard, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(shard, "wb").write(bytes(data))
    result = runner.invoke(app, ["evaluate", trained_run, out, "--out", str(tmp_path / "m.json"), "-q"])
    assert result.exit_code == 2, result.output
    assert "Error:" in result.stderr and rows[0]["shard"] in result.stderr and "damaged shard" in result.stderr


def test_a_url_that_is_not_a_tfrecord_folder_is_one_line(runner, tmp_path):
    result = runner.invoke(app, ["train", "ram://imgclass-nothing/here", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "ram://imgclass-nothing/here: no such folder; a URL must be a folder written by imgclass prepare " \
           "--tfrecord" in result.stderr


def test_records_too_large_for_the_cache_stream_shuffled(prepared, monkeypatch):
    """Without the in-memory cache the shards are read in a seeded random order through a shuffle buffer: every
    training image once per epoch with its label, a new order each epoch, the same orders for the same seed."""
    from imgclass_cli.data import pipeline

    _, _, records, _ = prepared
    monkeypatch.setattr(pipeline, "fits_in_memory", lambda n, size: False)
    train = dataset.scan(records, val_split=0.2, seed=5).splits["train"]
    spec = pipeline.PipelineSpec(16, 4, seed=7)

    def epoch(ds):
        return [(int(y), x.tobytes()) for xs, ys in ds.as_numpy_iterator() for x, y in zip(xs, ys)]

    ds = pipeline.build(train, spec, training=True)
    first, second = epoch(ds), epoch(ds)
    in_order = epoch(pipeline.build(train, spec, training=False))
    assert sorted(first) == sorted(second) == sorted(in_order) and len(in_order) == len(train)
    assert first != second and first != in_order
    again = pipeline.build(train, spec, training=True)
    assert [epoch(again), epoch(again)] == [first, second]
