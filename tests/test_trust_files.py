"""Issue 9, part A: imgclass never deletes a user's file and treats run dirs, exports, checkpoints, manifests and
SavedModels as untrusted input. Every case builds the user's files, runs the command, and checks their sha256."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from imgclass_cli import config, fs
from imgclass_cli.cli import app

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def checksums(root) -> dict:
    """sha256 of every file under root (symlinks as their target text); the folder set too."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = "dir"
        for n in filenames:
            p = os.path.join(dirpath, n)
            if os.path.islink(p):
                out[os.path.relpath(p, root)] = "link:" + os.readlink(p)
            else:
                out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def user_folder(root, with_pngs=True) -> str:
    """A folder of the user's: PNGs, a README, a source file."""
    from tests.conftest import make_class_folders

    os.makedirs(root, exist_ok=True)
    if with_pngs:
        make_class_folders(os.path.join(root, "train"), per_class=3, classes={"cats": (200, 10, 10)})
    with open(os.path.join(root, "README"), "w") as f:
        f.write("my notes\n")
    os.makedirs(os.path.join(root, "src"), exist_ok=True)
    with open(os.path.join(root, "src", "main.c"), "w") as f:
        f.write("int main(void) { return 0; }\n")
    return str(root)


@pytest.fixture
def readonly(tmp_path):
    """Make a folder read-only the way it is for real: a read-only bind mount as root (root ignores permission
    bits), the permission bits otherwise."""
    mounted = []

    def make(path):
        path = str(path)
        if os.geteuid() == 0:
            r = subprocess.run(["mount", "--bind", path, path], capture_output=True)
            if r.returncode != 0:
                pytest.skip("cannot bind-mount as root here")
            mounted.append(path)
            subprocess.run(["mount", "-o", "remount,bind,ro", path], check=True)
        else:
            for dirpath, _, _ in os.walk(path):
                os.chmod(dirpath, 0o555)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", path], check=False)


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


# ---------------------------------------------------------------- 1. --cache-dir

@pytest.mark.slow
def test_cache_dir_never_deletes_a_users_folder(runner, data_dir, tmp_path, monkeypatch):
    """Case 1: finetune --cache-dir victim used to delete victim/train; the cache now lives in a folder of its own."""
    victim = user_folder(tmp_path / "victim")
    os.makedirs(os.path.join(victim, "val"))
    open(os.path.join(victim, "val", "notes.txt"), "w").write("the old code deleted DIR/train and DIR/val")
    before = checksums(victim)
    monkeypatch.setattr(config, "MEMORY_CACHE_LIMIT_BYTES", 0)  # force the on-disk cache
    r = runner.invoke(app, ["finetune", data_dir, "--backbone", "mobilenet", "--weights", "none", "--image-size",
                            "32", "--epochs", "1", "--augment", "none", "--batch-size", "32", "--cache-dir", victim,
                            "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    assert "on disk in" in " ".join(r.stderr.split())  # the cache really went to disk, inside victim
    assert checksums(victim) == before  # nothing added, nothing removed: the cache folder is gone too


def test_feature_cache_folder_with_a_users_file_is_kept(tmp_path):
    import numpy as np

    from imgclass_cli.model import feature_cache

    batches = lambda v: [(np.ones((4, 3), np.float32), np.zeros(4, np.int32))]  # noqa: E731
    cache = feature_cache.build(lambda b: b, [(3,)], batches, 4, 1, disk_parent=str(tmp_path), limit=0)
    open(os.path.join(cache.folder, "notes.txt"), "w").write("mine")  # someone put a file in it
    cache.close()
    assert open(os.path.join(cache.folder, "notes.txt")).read() == "mine"


# ---------------------------------------------------------------- 2. prepare --force

def test_prepare_force_keeps_a_project_with_its_own_prepare_json(runner, data_dir, tmp_path):
    project = user_folder(tmp_path / "project", with_pngs=False)
    with open(os.path.join(project, "prepare.json"), "w") as f:
        json.dump({"name": "my build script", "imgclass_prepare": "not really"}, f)
    before = checksums(project)
    r = runner.invoke(app, ["prepare", data_dir, project, "--force", "-q"])
    assert r.exit_code == 2 and "refusing to replace it even with --force" in r.stderr
    assert checksums(project) == before


def test_prepare_force_replaces_its_own_output_only(runner, data_dir, tmp_path):
    out = str(tmp_path / "prep")
    assert runner.invoke(app, ["prepare", data_dir, out, "-q"]).exit_code == 0
    marker = fs.read_marker(out)
    assert marker["kind"] == "prepared" and "manifest.csv" in marker["files"]
    assert runner.invoke(app, ["prepare", data_dir, out, "-q", "--force"]).exit_code == 0
    open(os.path.join(out, "train", "my-notes.txt"), "w").write("mine")  # not once it holds a user's file
    r = runner.invoke(app, ["prepare", data_dir, out, "-q", "--force"])
    assert r.exit_code == 2 and "refusing" in r.stderr
    assert open(os.path.join(out, "train", "my-notes.txt")).read() == "mine"
    os.remove(os.path.join(out, "train", "my-notes.txt"))
    os.remove(os.path.join(out, fs.MARKER))  # without imgclass's marker the folder is the user's, whatever it holds
    before = checksums(out)
    r = runner.invoke(app, ["prepare", data_dir, out, "-q", "--force"])
    assert r.exit_code == 2 and "refusing" in r.stderr
    assert checksums(out) == before


def test_ownership_rule_nested_exports_and_unmarked_folders(tmp_path):
    run = tmp_path / "run"
    with fs.staged(str(run), False, fs.RUN) as tmp:
        for name in ("model.keras", "labels.json", "history.csv"):
            open(os.path.join(tmp, name), "w").write("x")
        json.dump({"imgclass_version": "0.1.0"}, open(os.path.join(tmp, "config.json"), "w"))
    assert fs.is_owned(str(run), fs.RUN)
    with fs.staged(str(run / "export" / "tflite"), False, fs.EXPORT) as tmp:  # an export written later inside it
        open(os.path.join(tmp, "model.tflite"), "w").write("x")
    assert fs.is_owned(str(run), fs.RUN)
    open(run / "thesis.tex", "w").write("mine")
    assert not fs.is_owned(str(run), fs.RUN)
    assert not fs.is_owned(str(run), fs.EXPORT)  # the kind must match too
    os.remove(run / "thesis.tex")
    os.remove(run / fs.MARKER)  # no marker: the user's folder, even holding only a run's files
    assert not fs.is_owned(str(run), fs.RUN)


# ---------------------------------------------------------------- 3. --resume

def _interrupted_run(data_dir, out):
    """A scratch run stopped by Ctrl-C after its first epoch: a real checkpoint beside `out`."""
    from imgclass_cli._tf import keras
    from imgclass_cli.config import TrainConfig
    from imgclass_cli.errors import ImgclassError
    from imgclass_cli.run import training

    class CtrlC(keras().callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    from imgclass_cli.report.output import StderrReporter

    cfg = TrainConfig(data=data_dir, arch="cnn", image_size=16, epochs=2, batch_size=16, out=out)
    with pytest.raises(ImgclassError):
        training.run(cfg, StderrReporter(quiet=True), callbacks=[CtrlC()])


@pytest.mark.slow
def test_resume_never_takes_where_to_write_or_delete_from_the_checkpoint(runner, data_dir, tmp_path):
    from imgclass_cli.run import checkpoints as ckpt

    out = str(tmp_path / "run")
    _interrupted_run(data_dir, out)
    folder = ckpt.checkpoint_dir(out)
    victim = user_folder(tmp_path / "victim")
    before = checksums(victim)
    state = json.load(open(os.path.join(folder, "state.json")))
    state["out"] = state["config"]["out"] = victim  # a crafted (or copied) checkpoint
    state["config"]["cache_dir"] = victim
    json.dump(state, open(os.path.join(folder, "state.json"), "w"))

    copied = str(tmp_path / ".copy.checkpoint")  # a checkpoint copied beside another name continues that name
    shutil.copytree(folder, copied)
    kept = checksums(folder)
    r = runner.invoke(app, ["train", data_dir, "--resume", copied, "-q"])
    assert r.exit_code == 0, r.output
    copy = str(tmp_path / "copy")
    assert os.path.isfile(os.path.join(copy, "model.keras")) and not os.path.exists(copied)
    saved = json.load(open(os.path.join(copy, "config.json")))["options"]
    assert saved["out"] == copy and saved.get("cache_dir") is None  # (a train run does not list cache_dir at all)
    assert checksums(victim) == before
    assert checksums(folder) == kept and not os.path.exists(out)  # the original stays resumable


@pytest.mark.parametrize("field,value", [("epoch", "2"), ("phase", 7), ("history", {"a": 1}),
                                         ("config.aug_views", 10**9), ("config.epochs", -1),
                                         ("config.augment", "wild"), ("config", [])])
def test_crafted_state_json_is_exit_2_naming_the_field(runner, data_dir, tmp_path, field, value):
    state = {"config": {"command": "train", "data": data_dir, "epochs": 2}, "history": [], "phase": 1, "epoch": 1}
    target, _, key = field.rpartition(".")
    (state[target] if target else state)[key] = value
    folder = tmp_path / ".run.checkpoint"
    folder.mkdir()
    fs.write_marker(str(folder), fs.CHECKPOINT, [])  # a crafted state.json in a folder marked as a checkpoint
    json.dump(state, open(folder / "state.json", "w"))
    r = runner.invoke(app, ["train", data_dir, "--resume", str(tmp_path / "run")])
    assert r.exit_code == 2, r.output
    assert "state.json" in r.stderr and field in r.stderr
    assert not os.path.exists(tmp_path / "run")


def test_resume_refuses_a_folder_that_is_not_a_checkpoint(runner, data_dir, tmp_path):
    project = user_folder(tmp_path / "project", with_pngs=False)
    json.dump({"config": {}, "phase": 1, "epoch": 0, "history": []}, open(os.path.join(project, "state.json"), "w"))
    before = checksums(project)
    r = runner.invoke(app, ["train", data_dir, "--resume", project])
    assert r.exit_code == 2 and "no checkpoint" in r.stderr
    assert checksums(project) == before


# ---------------------------------------------------------------- 4. SavedModel / export.json

def _export_dir(folder, fmt, model, image_size=32, labels=("a", "b", "c")):
    os.makedirs(folder, exist_ok=True)
    json.dump({"format": fmt, "model": model, "image_size": image_size}, open(os.path.join(folder, "export.json"), "w"))
    open(os.path.join(folder, "labels.txt"), "w").write("".join(f"{n}\n" for n in labels))
    return str(folder)


@pytest.fixture(scope="module")
def evil_savedmodel(tmp_path_factory):
    """A SavedModel whose serving function writes a file: what a stranger's export may hold."""
    from imgclass_cli._tf import tf

    t = tf()
    root = tmp_path_factory.mktemp("evil")
    target = str(root / "pwned.txt")

    class Evil(t.Module):
        @t.function(input_signature=[t.TensorSpec([None, 32, 32, 3], t.float32, name="image")])
        def serve(self, image):
            t.io.write_file(target, "pwned")
            return {"probabilities": t.nn.softmax(t.reduce_mean(image, axis=[1, 2]))}

    m = Evil()
    folder = _export_dir(root / "export", "savedmodel", "saved_model")
    t.saved_model.save(m, os.path.join(folder, "saved_model"), signatures={"serving_default": m.serve})
    return folder, target


def test_predict_refuses_a_savedmodel_that_writes_files(runner, evil_savedmodel, test_dir):
    folder, target = evil_savedmodel
    before = checksums(folder)
    r = runner.invoke(app, ["predict", folder, os.path.join(test_dir, "red")])
    assert r.exit_code == 2, r.output
    assert "'WriteFile'" in r.stderr and "saved_model.pb" in r.stderr
    assert not os.path.exists(target)
    assert checksums(folder) == before


def test_predict_runs_an_imgclass_savedmodel_export(runner, exports, test_dir):
    out, r = exports["savedmodel"]  # the shared run's export (tests/conftest.py)
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["predict", out, os.path.join(test_dir, "red"), "-f", "jsonl"])
    assert r.exit_code == 0 and r.stdout.count('"status": "ok"') == 6


def test_predict_refuses_a_tflite_model_with_tensorflow_ops(runner, tmp_path, test_dir):
    from imgclass_cli._tf import tf

    t = tf()
    target = str(tmp_path / "pwned.txt")

    class Evil(t.Module):
        @t.function(input_signature=[t.TensorSpec([1, 32, 32, 3], t.float32)])
        def f(self, x):
            t.io.write_file(target, "pwned")
            return t.nn.softmax(t.reduce_mean(x, axis=[1, 2]))

    e = Evil()
    conv = t.lite.TFLiteConverter.from_concrete_functions([e.f.get_concrete_function()], e)
    conv.target_spec.supported_ops = [t.lite.OpsSet.TFLITE_BUILTINS, t.lite.OpsSet.SELECT_TF_OPS]
    folder = _export_dir(tmp_path / "export", "tflite", "model.tflite")
    open(os.path.join(folder, "model.tflite"), "wb").write(conv.convert())
    r = runner.invoke(app, ["predict", folder, os.path.join(test_dir, "red")])
    assert r.exit_code == 2 and "'FlexWriteFile'" in r.stderr, r.output
    assert not os.path.exists(target)


@pytest.mark.parametrize("model", ["/etc/passwd", "../outside.keras", "link.keras", 5])
def test_export_json_model_outside_the_folder_is_refused(runner, tmp_path, test_dir, model):
    outside = tmp_path / "outside.keras"
    outside.write_text("not a model")
    folder = _export_dir(tmp_path / "export", "keras", model)
    os.symlink(str(outside), os.path.join(folder, "link.keras"))
    r = runner.invoke(app, ["predict", folder, os.path.join(test_dir, "red")])
    assert r.exit_code == 2, r.output
    assert "export.json" in r.stderr and "field model" in r.stderr


def test_keras_export_with_a_lambda_layer_is_refused(runner, tmp_path, test_dir):
    from imgclass_cli._tf import keras

    K = keras()
    inp = K.Input((32, 32, 3))
    x = K.layers.Lambda(lambda t: t * 1.0)(inp)
    x = K.layers.GlobalAveragePooling2D()(x)
    folder = _export_dir(tmp_path / "export", "keras", "model.keras")
    K.Model(inp, K.layers.Dense(3, activation="softmax")(x)).save(os.path.join(folder, "model.keras"))
    r = runner.invoke(app, ["predict", folder, os.path.join(test_dir, "red")])
    assert r.exit_code == 2 and "model.keras" in r.stderr and "Lambda" in r.stderr


# ---------------------------------------------------------------- 5. manifest.csv

@pytest.fixture(scope="module")
def prepared(tmp_path_factory, data_dir, runner):
    out = str(tmp_path_factory.mktemp("prep") / "prep")
    assert runner.invoke(app, ["prepare", data_dir, out, "-q"]).exit_code == 0
    return out


@pytest.mark.parametrize("bad", ["../outside.png", "/etc/passwd", "train/red/escape.png"])
def test_manifest_rows_outside_the_prepared_folder_are_refused(runner, prepared, tmp_path, bad):
    import csv

    copy = str(tmp_path / "prep")
    shutil.copytree(prepared, copy)
    (tmp_path / "outside.png").write_bytes(open(os.path.join(prepared, "train", "red", os.listdir(
        os.path.join(prepared, "train", "red"))[0]), "rb").read())
    os.symlink(str(tmp_path / "outside.png"), os.path.join(copy, "train", "red", "escape.png"))
    rows = list(csv.DictReader(open(os.path.join(copy, "manifest.csv"), newline="")))
    rows[5]["path"] = bad
    with open(os.path.join(copy, "manifest.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    r = runner.invoke(app, ["train", copy, "--epochs", "1", "--image-size", "16", "--out", str(tmp_path / "run")])
    assert r.exit_code == 2, r.output
    assert "manifest.csv: row 7, field path" in r.stderr and "outside" in r.stderr
    assert not os.path.exists(tmp_path / "run")


# ---------------------------------------------------------------- 7. run directory files

@pytest.fixture
def run_copy(trained_run, tmp_path):
    copy = str(tmp_path / "run")
    shutil.copytree(trained_run, copy)
    return copy


@pytest.mark.parametrize("file,content,field", [
    ("labels.json", {"red": 0}, "is not a list"),
    ("labels.json", ["red"], "1 class name"),
    ("labels.json", ["blue", "green", "red", "extra"], "4 classes but"),
    ("labels.json", ["blue", "blue", "red"], "repeats"),
    ("labels.json", ["blue", "gr\x1b[31meen", "red"], "control character"),
    ("labels.json", ["blue", "", "red"], "entry 1"),
    ("config.json", {"imgclass_version": "0.1.0", "options": {"seed": "x"}, "image_size": 32}, "options.seed"),
    ("config.json", {"imgclass_version": "0.1.0", "options": []}, "options"),
    ("config.json", {"imgclass_version": "0.1.0", "options": {}, "image_size": "big"}, "image_size"),
    ("config.json", ["not", "an", "object"], "imgclass_version"),
])
def test_crafted_run_files_are_exit_2_naming_file_and_field(runner, run_copy, test_dir, file, content, field):
    with open(os.path.join(run_copy, file), "w") as f:
        json.dump(content, f)
    for args in (["predict", run_copy, os.path.join(test_dir, "red")], ["evaluate", run_copy, test_dir]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert file in r.stderr and field in r.stderr and "unexpected" not in r.stderr


def test_export_json_with_wrong_types_is_exit_2(runner, tmp_path, test_dir):
    for meta, field in (({"format": "onnx", "model": "m"}, "format"), ({"format": "keras", "model": "m.keras"}, "image_size"),
                        ([1, 2], "JSON object")):
        folder = tmp_path / f"e{field.replace(' ', '')}"
        _export_dir(folder, "keras", "m.keras")
        json.dump(meta, open(folder / "export.json", "w"))
        r = runner.invoke(app, ["predict", str(folder), os.path.join(test_dir, "red")])
        assert r.exit_code == 2 and "export.json" in r.stderr and field in r.stderr, r.output


# ---------------------------------------------------------------- 11. locks

def _hold_lock(target) -> subprocess.Popen:
    """A real second process holding imgclass's lock on `target` until its stdin closes."""
    code = ("import sys; from imgclass_cli import fs; l = fs.Lock(sys.argv[1]).acquire(); print('locked', flush=True);"
            " sys.stdin.read()")
    p = subprocess.Popen([sys.executable, "-c", code, str(target)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env={**os.environ, "PYTHONPATH": REPO})
    assert p.stdout.readline().strip() == "locked"
    return p


def test_a_second_run_on_the_same_out_fails_at_once_naming_the_pid(runner, data_dir, tmp_path):
    out = tmp_path / "run"
    holder = _hold_lock(out)
    try:
        for args in (["train", data_dir, "--out", str(out)], ["prepare", data_dir, str(out)],
                     ["prepare", "--example", "digits", str(out)]):
            started = time.time()
            r = runner.invoke(app, args)
            assert r.exit_code == 2, r.output
            assert f"pid {holder.pid}" in r.stderr and "in use by another imgclass process" in r.stderr
            assert time.time() - started < 5 and not out.exists()
    finally:
        holder.stdin.close()
        holder.wait()
    # The holder is gone (a killed run): its lock file, with its pid still inside, is simply taken over.
    with open(fs.lock_path(str(out)), "w") as f:
        f.write(f"{dead_pid()}\n")
    r = runner.invoke(app, ["prepare", data_dir, str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert not os.path.exists(fs.lock_path(str(out)))


def test_export_out_is_locked(runner, trained_run, tmp_path):
    out = tmp_path / "exp"
    holder = _hold_lock(out)
    try:
        r = runner.invoke(app, ["export", trained_run, "--out", str(out)])
        assert r.exit_code == 2 and f"pid {holder.pid}" in r.stderr
    finally:
        holder.stdin.close()
        holder.wait()


# ---------------------------------------------------------------- 12. read-only outputs, stale folders, evaluate files

def test_read_only_output_parent_fails_before_any_image_is_decoded(runner, data_dir, trained_run, tmp_path, readonly):
    (tmp_path / "ro").mkdir()
    ro = readonly(tmp_path / "ro")
    for args in (["train", data_dir, "--out", os.path.join(ro, "run")], ["prepare", data_dir, os.path.join(ro, "prep")],
                 ["evaluate", trained_run, data_dir, "--out", os.path.join(ro, "m", "metrics.json")]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert ro in r.stderr and "cannot write there" in r.stderr
        assert "classes," not in r.stderr and "checking" not in r.stderr  # nothing was scanned or decoded


def test_evaluate_on_a_read_only_run_says_so(runner, trained_run, test_dir, tmp_path, readonly):
    run = str(tmp_path / "run")
    shutil.copytree(trained_run, run)
    readonly(run)
    r = runner.invoke(app, ["evaluate", run, test_dir])
    assert r.exit_code == 2 and run in r.stderr and "cannot write there" in r.stderr


def test_stale_staging_folders_of_killed_runs_are_cleaned(runner, data_dir, tmp_path):
    pid = dead_pid()
    partial = tmp_path / f".prep.partial-{pid}"
    partial.mkdir()
    fs.write_marker(str(partial), fs.PREPARED, [], staging=pid)
    (partial / "manifest.csv").write_text("half")
    old = tmp_path / f".prep.old-{pid}"
    with fs.staged(str(old), False, fs.PREPARED) as tmp:
        open(os.path.join(tmp, "manifest.csv"), "w").write("x")
    users = tmp_path / f".prep.partial-{pid + 1}"  # the same name pattern, but no marker of ours
    users.mkdir()
    (users / "keep.txt").write_text("mine")
    r = runner.invoke(app, ["prepare", data_dir, str(tmp_path / "prep"), "-q"])
    assert r.exit_code == 0, r.output
    assert not partial.exists() and not old.exists()
    assert (users / "keep.txt").read_text() == "mine"


def test_evaluate_output_never_overwrites_a_users_files(runner, trained_run, test_dir, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "misclassified.csv").write_text("my,own,csv\n")
    (folder / "confusion_matrix.png").write_bytes(b"my own picture")
    before = checksums(folder)
    r = runner.invoke(app, ["evaluate", trained_run, test_dir, "--out", str(folder / "metrics.json"), "-q"])
    assert r.exit_code == 2 and "misclassified.csv" in r.stderr and "not written by imgclass" in r.stderr
    assert checksums(folder) == before
    # A folder of its own: evaluate writes there and may replace its own files on the next evaluate.
    mine = tmp_path / "mine"
    for _ in range(2):
        r = runner.invoke(app, ["evaluate", trained_run, test_dir, "--out", str(mine / "m.json"), "-q"])
        assert r.exit_code == 0, r.output
    assert set(fs.read_marker(str(mine))["files"]) == {"m.json", "misclassified.csv", "confusion_matrix.png",
                                                       "reliability.png", "report.html", "mistakes.png"}


def test_evaluate_into_the_run_keeps_the_run_replaceable(runner, trained_run, test_dir, tmp_path):
    run = str(tmp_path / "run")
    shutil.copytree(trained_run, run)
    assert runner.invoke(app, ["evaluate", run, test_dir, "-q"]).exit_code == 0
    assert fs.is_owned(run, fs.RUN)  # metrics.json, misclassified.csv and the PNG are recorded in its marker
