"""Training orchestration: feature cache equivalence, interrupt + resume, seeded reproducibility, class weights."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from imgclass_cli import files
from imgclass_cli.cli import app
from imgclass_cli.config import Augment, TrainConfig
from imgclass_cli.errors import EXIT_INTERRUPTED, ImgclassError


class Collect:
    """A Reporter that keeps the messages."""

    def __init__(self):
        self.messages = []

    def info(self, message):
        self.messages.append(message)

    warn = info

    def train_begin(self, epochs, steps):
        pass

    def stage(self, description, total=None, unit="images"):
        from imgclass_cli.report.output import Stage

        return Stage(description, total, quiet=True)

    def epoch_begin(self, epoch):
        pass

    def close(self):
        pass

    def batch_end(self, step, logs):
        pass

    def epoch_end(self, epoch, logs):
        pass

    def train_end(self):
        pass


def _history(run):
    return list(csv.DictReader(open(os.path.join(run, "history.csv"))))


def test_class_weights_are_balanced():
    from imgclass_cli.run.training import class_weights

    labels = [0] * 30 + [1] * 10 + [2] * 5  # 45 images of 3 present classes: n / (k * count)
    w = class_weights(labels, 4)  # class 3 has no training image: weight 1, never divided by zero
    assert w == pytest.approx({0: 45 / 90, 1: 45 / 30, 2: 45 / 15, 3: 1.0})
    assert sum(w[c] * labels.count(c) for c in range(3)) == pytest.approx(45)  # balanced: the total weight is n


@pytest.mark.slow
def test_feature_cache_gives_the_weights_of_the_plain_path(data_dir, tmp_path):
    """One epoch, same batches, no augmentation, no dropout: cached and uncached heads end up equal."""
    from imgclass_cli.run import rundir, training

    weights = {}
    for cache in (True, False):
        cfg = TrainConfig(command="finetune", data=data_dir, arch="vgg16", weights="none", image_size=32, epochs=1,
                          batch_size=8, learning_rate=0.01, augment=Augment.none, dropout=0.0, cache=cache,
                          out=str(tmp_path / f"cache-{cache}"))
        reporter = Collect()
        result = training.run(cfg, reporter)
        assert any("feature cache" in m for m in reporter.messages) == cache
        assert (result.timings["feature_cache"] > 0) == cache  # the backbone pass is timed as its own stage
        model, _ = rundir.load(cfg.out)
        weights[cache] = model.get_layer("classifier").get_weights()
    from imgclass_cli.model import build as models

    init = models.build_classifier("vgg16", 3, 32).get_layer("classifier").get_weights()[0]
    moved = np.abs(weights[False][0] - init).max()
    assert moved > 1e-3  # the head really trained ...
    for a, b in zip(weights[True], weights[False]):  # ... and both paths trained it the same way
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, moved))


def test_disk_cache_gives_the_batches_of_the_memory_cache(tmp_path):
    from imgclass_cli.model import feature_cache

    x = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    y = np.arange(40) % 4
    batches = lambda v: [(x[i:i + 16], y[i:i + 16]) for i in range(0, 40, 16)]  # noqa: E731
    messages = []
    mem = feature_cache.build(lambda b: b, [(3,)], batches, 40, 1, disk_parent=str(tmp_path / "c"),
                              info=messages.append)
    disk = feature_cache.build(lambda b: b, [(3,)], batches, 40, 1, disk_parent=str(tmp_path / "c"), limit=0,
                               info=messages.append)
    assert mem.folder is None and disk.folder and os.path.exists(os.path.join(disk.folder, "x0.npy"))
    assert messages == ["feature cache: 40 images x 1 view(s), about 480 B in memory",
                        f"feature cache: 40 images x 1 view(s), about 480 B on disk in {disk.folder}"]
    mem_batches = list(feature_cache.dataset(mem, 8, 3, shuffle=True))
    disk_batches = list(feature_cache.dataset(disk, 8, 3, shuffle=True))
    assert len(mem_batches) == len(disk_batches) == 5
    for (xa, ya), (xb, yb) in zip(mem_batches, disk_batches):
        # same batch membership; inside a batch the disk path reads in index order
        order_a, order_b = np.argsort(xa[:, 0].numpy()), np.argsort(xb[:, 0].numpy())
        np.testing.assert_array_equal(xa.numpy()[order_a], xb.numpy()[order_b])
        np.testing.assert_array_equal(ya.numpy()[order_a], yb.numpy()[order_b])
    seen = np.sort(np.concatenate([xb[:, 0].numpy() for xb, _ in disk_batches]))
    np.testing.assert_array_equal(seen, x[:, 0])  # every cached row exactly once
    assert [float(xa[0, 0]) for xa, _ in mem_batches] != sorted(float(xa[0, 0]) for xa, _ in mem_batches)  # shuffled
    assert os.path.dirname(disk.folder) == str(tmp_path / "c")  # a folder of its own inside the one given
    disk.close()
    assert os.listdir(str(tmp_path / "c")) == []


@pytest.mark.slow
def test_interrupt_saves_a_checkpoint_and_resume_finishes_both_phases(data_dir, tmp_path, runner):
    from imgclass_cli.run import checkpoints as ckpt
    from imgclass_cli.run import training
    from imgclass_cli._tf import keras

    class CtrlC(keras().callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise KeyboardInterrupt

    out = str(tmp_path / "ft")
    cfg = TrainConfig(command="finetune", data=data_dir, arch="mobilenet", weights="none", image_size=32, epochs=2,
                      batch_size=16, augment=Augment.light, aug_views=2, unfreeze=8, finetune_epochs=1,
                      class_weight="auto", label_smoothing=0.1, weight_decay=1e-4, warmup_epochs=1, out=out)
    with pytest.raises(ImgclassError) as e:
        training.run(cfg, Collect(), callbacks=[CtrlC()])
    assert e.value.exit_code == EXIT_INTERRUPTED == 130
    folder = ckpt.checkpoint_dir(out)
    assert folder in e.value.message and f"--resume {out}" in e.value.message
    assert not os.path.exists(out)  # no half run directory
    state = ckpt.read_state(folder)
    assert (state["phase"], state["epoch"], len(state["history"])) == (1, 1, 1)
    assert os.path.exists(os.path.join(folder, files.WEIGHTS)) and os.path.exists(os.path.join(folder, files.OPTIMIZER))

    r = runner.invoke(app, ["finetune", data_dir, "--resume", out, "-q"])
    assert r.exit_code == 0, r.output
    rows = _history(out)
    assert [(int(h["epoch"]), int(h["phase"])) for h in rows] == [(1, 1), (2, 1), (3, 2)]
    assert not os.path.exists(folder)  # a finished run removes its checkpoint
    saved = json.load(open(os.path.join(out, "config.json")))["options"]
    assert saved["unfreeze"] == 8 and saved["aug_views"] == 2 and saved["class_weight"] == "auto"

    r = runner.invoke(app, ["finetune", data_dir, "--resume", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "no checkpoint" in r.stderr


@pytest.mark.slow
def test_same_seed_same_metrics(data_dir, tmp_path, runner):
    runs = []
    for name in ("a", "b"):
        out = str(tmp_path / name)
        r = runner.invoke(app, ["train", data_dir, "--epochs", "2", "--augment", "light", "--out", out, "-q",
                                "--class-weight", "auto", "--label-smoothing", "0.1", "--weight-decay", "1e-4",
                                "--warmup-epochs", "1", "--patience", "5"])
        assert r.exit_code == 0, r.output
        runs.append(out)
    a, b = (json.load(open(os.path.join(run, "metrics.json"))) for run in runs)
    assert a["accuracy"] == b["accuracy"] and a["confusion_matrix"] == b["confusion_matrix"]
    assert _history(runs[0]) == _history(runs[1])
    cfg = json.load(open(os.path.join(runs[0], "config.json")))
    assert cfg["image_size"] == 20  # the fixture's 20 px images: the scratch CNN trains at their own size


# --- issue 12: timings of a run, the fused decode check ----------------------------------------------------------


@pytest.fixture(scope="module")
def auto_run(runner, data_dir, tmp_path_factory):
    """A train run on train's automatic choices (no --epochs, --batch-size or --learning-rate), the length rule
    scaled down so the fixture's small set counts as large: 2 epochs. (run, CliRunner result, the command's wall
    time.) Its two tests run on one worker (conftest ONE_WORKER)."""
    import time

    from imgclass_cli import config

    out = tmp_path_factory.mktemp("auto") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(config, "AUTO_EPOCHS", (2, 12))
        mp.setattr(config, "AUTO_EPOCHS_IMAGES", 1)
        t0 = time.time()
        r = runner.invoke(app, ["train", data_dir, "--arch", "simple-cnn", "--image-size", "32", "--out", str(out)])
        wall = time.time() - t0
    return out, r, wall


@pytest.mark.slow
def test_timings_are_recorded_in_the_run_and_printed(auto_run):
    out, r, wall = auto_run
    assert r.exit_code == 0, r.output
    t = json.load(open(out / "timings.json"))
    stages = ["scan", "model", "check", "feature_cache", "epochs", "final_validation", "save", "total", "other"]
    assert list(t) == stages
    assert len(t["epochs"]) == 2 and all(s >= 0 for s in t["epochs"])
    assert all(t[k] >= 0 for k in stages if k != "epochs")
    assert t["check"] > 0 and t["save"] > 0 and t["feature_cache"] == 0  # no cache
    assert t["final_validation"] < 0.05  # reused from the last epoch (test_the_last_epochs_validation_...)
    parts = sum(t[k] for k in stages if k not in ("epochs", "total")) + sum(t["epochs"])
    assert parts == pytest.approx(t["total"], abs=0.01)  # the stages and `other` add up to the total ...
    assert t["total"] <= wall and t["other"] < 0.5 * t["total"]  # ... which is the run's own time, mostly staged
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("time ")]
    assert len(line) == 1 and f"time {t['total']:.1f}s: " in line[0] and "2 epochs" in line[0] and "check" in line[0]


def _pngs(root, n_per_class, size=8):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        os.makedirs(root / c, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i:04d}.png")


@pytest.mark.parametrize("policy", ["skip", "fail"])
def test_fused_check_names_a_corrupt_image_in_the_middle_and_keeps_the_rest_decoded(tmp_path, policy):
    """400 files; two that pass the header probe but fail the decode, one in the middle of the first class and one
    later, and a file with a broken header after both: skip names all three and keeps every other image exactly
    as decoded; fail names the first in path order."""
    from imgclass_cli.data import dataset, verify
    from imgclass_cli.data.imagefile import decode

    _pngs(tmp_path, 200)
    bad = [tmp_path / "a" / "0100.png", tmp_path / "b" / "0150.png"]
    for p in bad:
        p.write_bytes(p.read_bytes()[:60])  # header and IHDR intact, pixel data cut
    broken = tmp_path / "b" / "0199.png"
    broken.write_bytes(broken.read_bytes()[:20])  # the PNG signature, then a cut IHDR: the probe refuses it
    assert not verify.check_file(str(broken), decode=False).ok
    data = dataset.scan(str(tmp_path), val_split=0.25, seed=1)
    assert verify.check_file(str(bad[0]), decode=False).ok  # only the decode finds it
    warned = []
    if policy == "fail":
        with pytest.raises(ImgclassError) as e:
            verify.screen(data, policy, warned.append, image_size=6)
        assert e.value.message.startswith(f"{bad[0]}: cannot decode") and "--on-bad-image fail" in e.value.message
        return
    reason = verify.check_file(str(bad[0])).reason
    done = []
    data = verify.screen(data, policy, warned.append, image_size=6, progress=lambda d, n: done.append((d, n)))
    assert sorted(warned) == sorted([f"skipping {bad[0]}: {reason}",
                                     f"skipping {bad[1]}: {verify.check_file(str(bad[1])).reason}",
                                     f"skipping {broken}: {verify.check_file(str(broken)).reason}"])
    assert data.image_size == 6 and sum(len(v) for v in data.splits.values()) == 397
    assert done[-1] == (400, 400) and [d for d, _ in done] == sorted(d for d, _ in done)
    for split, samples in data.splits.items():
        images = data.images[split]
        assert images.shape == (len(samples), 6, 6, 3) and images.dtype == np.uint8
        for i in range(len(samples)):  # every one: a file never decoded would stay zeros
            np.testing.assert_array_equal(images[i], decode(open(samples[i].path, "rb").read(), 6).numpy())


def test_check_keeps_no_images_when_they_would_not_fit(tmp_path, monkeypatch):
    from imgclass_cli import config
    from imgclass_cli.data import dataset, verify

    _pngs(tmp_path, 5)
    monkeypatch.setattr(config, "MEMORY_CACHE_LIMIT_BYTES", 100)
    monkeypatch.setattr("imgclass_cli.data.pipeline.MEMORY_CACHE_LIMIT_BYTES", 100)
    data = verify.screen(dataset.scan(str(tmp_path), val_split=0, seed=1), "skip", print, image_size=8)
    assert data.images == {} and len(data.splits["train"]) == 10  # checked, streamed later


@pytest.mark.slow
def test_train_without_epochs_runs_the_automatic_length_and_records_it(auto_run):
    """The rule scaled down so the fixture's small set counts as large: 2 epochs run, are printed and recorded."""
    out, r, _ = auto_run
    assert r.exit_code == 0, r.output
    assert "2 epochs (the default for " in r.stderr and "--epochs sets it" in r.stderr
    assert json.load(open(out / "config.json"))["options"]["epochs"] == 2 and len(_history(str(out))) == 2
    # No --batch-size either: the fixture's few dozen training images get the smallest automatic batch.
    train_images = json.load(open(out / "config.json"))["split"]["counts"]["train"]
    assert train_images < 16 * 32
    assert f"batch size 16 (the default for {train_images} training images" in r.stderr
    assert json.load(open(out / "config.json"))["options"]["batch_size"] == 16
    # No --learning-rate: the default for batch 16, said on the same line and recorded as a number.
    assert "; learning rate 0.002 (the default for batch size 16: 0.008 x batch / 64" in r.stderr
    assert json.load(open(out / "config.json"))["options"]["learning_rate"] == pytest.approx(0.002)


def test_the_default_batch_is_64_and_smaller_on_small_sets_for_16_steps_an_epoch():
    from imgclass_cli.config import TrainConfig, auto_batch_size

    assert TrainConfig.defaults("train").batch_size is None  # train without --batch-size: auto_batch_size once images are counted
    # hymenoptera's 196 training photos (its train/ less 20% validation) get 16 (measured: +7 to +13 points on its val photos over 64)
    assert [auto_batch_size(n) for n in (0, 196, 511, 512, 1023, 1024, 48_000)] == [16, 16, 16, 32, 32, 64, 64]


def test_the_default_learning_rate_is_8e_3_at_batch_64_and_scales_with_the_batch():
    from imgclass_cli.config import TrainConfig, auto_learning_rate

    assert TrainConfig.defaults("train").learning_rate is None  # train without --learning-rate: auto_learning_rate of the batch
    # Fashion-MNIST's batch 64 gets 8e-3 (0.932 test accuracy over seeds 42 and 7, against 0.928-0.930 at 3e-3);
    # hymenoptera's batch 16 gets 2e-3 (8e-3 there cost 8 points)
    assert [auto_learning_rate(b) for b in (16, 18, 32, 64, 128)] == pytest.approx([2e-3, 2.25e-3, 4e-3, 8e-3, 16e-3])


def test_the_default_length_is_12_epochs_and_fewer_on_large_sets_with_at_least_5():
    from imgclass_cli.config import TrainConfig, auto_epochs

    assert TrainConfig.defaults("train").epochs is None  # train without --epochs: auto_epochs once the images are counted
    # a photo set of a few hundred images, a mid-size set, Fashion-MNIST's 48,000 training images, a huge set
    assert [auto_epochs(n) for n in (0, 245, 20_000, 30_000, 48_000, 1_000_000)] == [12, 12, 12, 10, 6, 5]


def test_every_dataset_train_finetune_and_evaluate_iterate_has_tf_data_autotuning_off(tmp_path, data_dir, runner,
                                                                                       monkeypatch):
    """TensorFlow 2.21's autotuning thread is not woken when its iterator is deleted, and Keras deletes one at every
    epoch's start and at fit's end: with autotuning on, a third of the epochs froze for 10-60 s
    (bench/autotune_stall.py). Every iterator a run creates (the check's decode, training, validation, the feature
    cache, evaluation) must come from a pipeline with autotuning off."""
    from tensorflow.python.data.ops import iterator_ops

    seen = []
    init = iterator_ops.OwnedIterator.__init__

    def spy(self, dataset=None, *args, **kwargs):
        if dataset is not None:
            seen.append(dataset.options().autotune.enabled)  # None (the default) means on
        init(self, dataset, *args, **kwargs)

    monkeypatch.setattr(iterator_ops.OwnedIterator, "__init__", spy)
    out = str(tmp_path / "run")
    r = runner.invoke(app, ["train", data_dir, "--image-size", "16", "--epochs", "2", "--out", out, "-q"])
    assert r.exit_code == 0, r.output
    after_train = len(seen)
    r = runner.invoke(app, ["finetune", data_dir, "--weights", out, "--epochs", "2", "--out", str(tmp_path / "ft"), "-q"])
    assert r.exit_code == 0, r.output
    after_finetune = len(seen)
    r = runner.invoke(app, ["evaluate", out, data_dir, "-q"])
    assert r.exit_code == 0, r.output
    # check + 2 training epochs + validation at least; the feature cache's passes; evaluation
    assert after_train >= 4 and after_finetune > after_train and len(seen) > after_finetune
    assert seen == [False] * len(seen)


@pytest.mark.parametrize("patience", [0, 5])
def test_the_last_epochs_validation_is_the_final_validation_unless_early_stopping_may_restore_weights(
        data_dir, tmp_path, monkeypatch, patience):
    """Each epoch's validation runs once, through the traced forward pass, and the run's validation metrics are
    the last epoch's: the validation images are not run through the model again after fit (one pass fewer, about
    4 s on Fashion-MNIST). Early stopping may restore an earlier epoch's weights, so then they are run again."""
    from imgclass_cli.run import training

    passes = []
    real = training.predict_logits

    def counting(model, ds, progress=None):
        passes.append(1)
        return real(model, ds, progress)

    monkeypatch.setattr(training, "predict_logits", counting)
    cfg = TrainConfig(data=data_dir, image_size=16, epochs=3, batch_size=8, patience=patience,
                      out=str(tmp_path / "run"))
    result = training.run(cfg, Collect())
    assert len(passes) == 3 + (patience > 0)
    last = result.history[-1]
    assert result.report.accuracy == pytest.approx(last["val_accuracy"], abs=1e-9)
    assert 0 < last["val_loss"] < 10 and all("val_loss" in row and "val_accuracy" in row for row in result.history)
