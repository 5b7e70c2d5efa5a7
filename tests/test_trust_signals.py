"""Issue 9, part B: hostile names reach a person escaped (and machines exactly), SIGINT/SIGTERM checkpoint at a safe
point (exit 130/143, resumable), a full disk is one `Error:` line with nothing partial left, and the guide's
pipelines are safe for any file name."""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from imgclass_cli import files, fs
from imgclass_cli.cli import app
from tests.conftest import COLOURS, make_class_folders

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOSTILE_IMAGES = ["[draft] cat.png", "a[/]b.png", "esc\x1b[31mred.png", "new\nline.png", "a .git"]
HOSTILE_BAD = "bad\x1b]0;pwned\x07[red]x[blink].png"  # not an image: a warning on stderr names it


def _checksums(folder: str) -> dict[str, str]:
    out = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            p = os.path.join(dirpath, name)
            out[p] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def _inbox(test_dir: str, folder) -> str:
    os.makedirs(folder)
    source = sorted(glob.glob(os.path.join(test_dir, "red", "*")))
    for name, src in zip(HOSTILE_IMAGES, source):
        os.makedirs(os.path.dirname(os.path.join(folder, name)), exist_ok=True)  # `a[/]b.png` is `]b.png` in `a[`
        shutil.copy(src, os.path.join(folder, name))
    with open(os.path.join(folder, HOSTILE_BAD), "w") as f:
        f.write("not an image")
    return str(folder)


def _train_args(data, out, *extra):
    return ["train", data, "--arch", "simple-cnn", "--image-size", "32", "--batch-size", "16", "--augment", "none",
            "--out", out, *extra]


def _no_temp_files(root) -> list[str]:
    """Temporary files or staged folders imgclass may have left anywhere under root."""
    left = []
    for dirpath, dirnames, names in os.walk(root):
        left += [os.path.join(dirpath, n) for n in names + dirnames if n.endswith(".tmp") or ".partial-" in n
                 or "tmp-" in n]
    return left


# --- 6: names reach the terminal escaped, machine formats keep them exact ---------------------------------------


def test_hostile_file_names_are_shown_escaped_and_kept_exact_in_jsonl(runner, trained_run, test_dir, tmp_path,
                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    _inbox(test_dir, tmp_path / "inbox")
    before = _checksums("inbox")

    bad = os.path.join("inbox", HOSTILE_BAD)  # a folder walk skips non-images: name it to get its warning
    r = runner.invoke(app, ["predict", trained_run, "inbox", bad])
    assert r.exit_code == 0, r.output  # old code: MarkupError on `a[/]b.png` after predicting everything
    assert "\x1b" not in r.stdout and "\x1b" not in r.stderr and "\x07" not in r.stderr
    for shown in ("inbox/[draft] cat.png", "inbox/a[/]b.png", "inbox/esc\\x1b[31mred.png", "inbox/new\\nline.png",
                  "inbox/a .git"):
        assert shown in r.stdout, shown
    assert "Warning:" in r.stderr and "bad\\x1b]0;pwned\\x07[red]x[blink].png" in r.stderr

    r = runner.invoke(app, ["predict", trained_run, "inbox", bad, "-f", "jsonl"])
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert {rec["path"] for rec in records} == {os.path.join("inbox", n) for n in HOSTILE_IMAGES + [HOSTILE_BAD]}
    assert _checksums("inbox") == before


@pytest.mark.slow
def test_hostile_class_names_in_train_summary_evaluate_and_prepare(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = make_class_folders(tmp_path / "data", per_class=8, seed=3,
                              classes={"[draft]": COLOURS["red"], "[bold]b": COLOURS["blue"]})
    r = runner.invoke(app, _train_args(data, "run", "--epochs", "1"))
    assert r.exit_code == 0, r.output
    assert "[draft]" in r.stdout and "[bold]b" in r.stdout  # validation per-class table
    assert json.load(open("run/labels.json")) == ["[bold]b", "[draft]"]

    r = runner.invoke(app, ["evaluate", "run", data, "--out", "ev/metrics.json"])
    assert r.exit_code == 0, r.output
    per_class = r.stdout.split("per class")[1]
    assert "[draft]" in per_class and "[bold]b" in per_class
    assert "confusion" in r.stdout and r.stdout.count("[draft]") >= 3  # per class, matrix row and column

    shutil.copy(os.path.join(data, "[bold]b", "img001.png"), os.path.join(data, "[bold]b", "x\x1b[2J.png"))
    r = runner.invoke(app, ["prepare", data, "prepared"])
    assert r.exit_code == 0, r.output
    assert "[draft]" in r.stdout and "x\\x1b[2J.png" in r.stdout and "\x1b" not in r.stdout  # the duplicate finding


@pytest.mark.parametrize("bad", ["x\ny", "e\x1b[2Jx"])
def test_class_folder_with_a_control_character_is_refused_at_train(runner, tmp_path, bad):
    data = make_class_folders(tmp_path / "data", per_class=4, classes={bad: COLOURS["red"], "ok": COLOURS["blue"]})
    r = runner.invoke(app, _train_args(data, str(tmp_path / "run"), "--epochs", "1"))
    assert r.exit_code == 2, r.output
    shown = bad.replace("\n", "\\n").replace("\x1b", "\\x1b")
    assert r.stderr.startswith("Error:") and shown in r.stderr and "rename the folder" in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "\x1b" not in r.stderr  # one line, no raw control bytes
    assert not os.path.exists(tmp_path / "run")


# --- 8, 9: signals at safe points, exit 130/143, a checkpoint that always loads -------------------------------


def _assert_loadable_checkpoint(folder: str) -> dict:
    from imgclass_cli.run import checkpoints as ckpt

    state = ckpt.read_state(folder)
    with np.load(os.path.join(folder, files.WEIGHTS)) as w:
        assert len(w.files) > 0 and all(np.isfinite(w[k]).all() for k in w.files)
    assert not [n for n in os.listdir(folder) if n not in (files.STATE, files.WEIGHTS, files.OPTIMIZER, fs.MARKER)]  # no temp
    return state


@pytest.mark.slow
def test_signal_during_a_checkpoint_write_leaves_a_resumable_checkpoint(runner, data_dir, tmp_path, monkeypatch):
    """SIGINT arrives while the first checkpoint's file is open for writing (the HDF5 file on the old code, the
    temporary file on the new one), and again in the next write (Ctrl-C pressed twice): each write completes, the
    run stops at the next safe point with a whole checkpoint, exit 130."""
    import h5py

    sent = []

    def send_once(path: str) -> None:
        # the checkpoint's own files, not the ownership marker written when its folder is made
        if ".checkpoint" in path and ".imgclass" not in os.path.basename(path) and len(sent) < 2:
            sent.append(path)
            os.kill(os.getpid(), signal.SIGINT)

    real_fsync, real_close = os.fsync, h5py.File.close

    def fsync(fd):
        send_once(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    def close(self):
        try:
            send_once(str(self.filename))
        except ValueError:  # already closed
            pass
        return real_close(self)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(h5py.File, "close", close)
    before = _checksums(data_dir)
    out = str(tmp_path / "run")
    r = runner.invoke(app, _train_args(data_dir, out, "--epochs", "3"))
    assert len(sent) == 2, "the hook did not fire"
    assert r.exit_code == 130, r.output
    assert "interrupted (SIGINT)" in r.stderr and f"--resume {out}" in r.stderr
    from imgclass_cli.run import checkpoints as ckpt

    state = _assert_loadable_checkpoint(ckpt.checkpoint_dir(out))
    assert state["epoch"] == 1 and not os.path.exists(out)

    monkeypatch.undo()
    r = runner.invoke(app, ["train", data_dir, "--resume", out, "-q"])
    assert r.exit_code == 0, r.output
    assert len(open(os.path.join(out, "history.csv")).read().splitlines()) == 1 + 3
    assert _checksums(data_dir) == before


def _start(args, cwd) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, "-m", "imgclass_cli", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _signal_after_first_epoch(proc: subprocess.Popen, signum: int) -> str:
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("epoch "):
            proc.send_signal(signum)
            break
    rest = proc.stderr.read()
    proc.wait(timeout=120)
    return "".join(lines) + rest


@pytest.mark.slow
def test_sigterm_mid_epoch_then_resume_reproduces_the_uninterrupted_run(runner, data_dir, tmp_path):
    """SIGTERM as `timeout` or a CI runner sends it, to a real process in the middle of epoch 2 (SIGINT to a real
    signal handler: the checkpoint-write test). The checkpoint is the one of epoch 1's end, the same command again
    keeps it, and --resume gives the uninterrupted run's history.csv to the last bit: same seed, shuffling, dropout
    and augmentation draws, and TensorFlow's ops are deterministic in imgclass (enable_op_determinism)."""
    from imgclass_cli.run import checkpoints as ckpt

    before = _checksums(data_dir)
    out = str(tmp_path / "run")
    epochs = 4  # epochs of ~0.4 s: the signal, sent as epoch 1's line comes, lands in epoch 2's batches
    args = _train_args(data_dir, out, "--epochs", str(epochs), "--batch-size", "4", "--augment", "light")
    proc = _start(args, tmp_path)
    err = _signal_after_first_epoch(proc, signal.SIGTERM)
    assert proc.returncode == 143, err  # old code: -15, no message
    last = err.strip().splitlines()[-1]
    assert last.startswith("Error: interrupted (SIGTERM); checkpoint saved in") and f"--resume {out}" in last
    folder = ckpt.checkpoint_dir(out)
    state = _assert_loadable_checkpoint(folder)
    assert state["epoch"] == 1 and not os.path.exists(out)  # epoch 2 had begun: rolled back to epoch 1's end
    saved = _checksums(folder)

    # A CI retry of the same command: the checkpoint is kept, and the message says how to go on or start over.
    r = runner.invoke(app, args + ["-q"])
    assert r.exit_code == 2 and not r.stdout, r.output
    assert "an interrupted run's checkpoint" in r.stderr and f"--resume {out}" in r.stderr and "--force" in r.stderr
    assert _checksums(folder) == saved and not os.path.exists(out)

    # The resume in this process: a resume in a fresh process is test_terminal's (no second TensorFlow start here).
    r = runner.invoke(app, ["train", data_dir, "--resume", out, "-q"])
    assert r.exit_code == 0, r.output
    resumed = open(os.path.join(out, "history.csv")).read()
    assert len(resumed.splitlines()) == 1 + epochs and not os.path.exists(folder)
    r = runner.invoke(app, _train_args(data_dir, str(tmp_path / "whole"), "--epochs", str(epochs), "--batch-size",
                                       "4", "--augment", "light", "-q"))
    assert r.exit_code == 0, r.output
    assert resumed == open(tmp_path / "whole" / "history.csv").read()  # old code: epoch 2 loss 0.xx vs 0.yy
    assert _checksums(data_dir) == before


# --- 10: a full disk is one line, exit 1, nothing partial -------------------------------------------------------


def _enospc_on(monkeypatch, marker: str) -> list:
    """The lowest-level write (the fsync of the file being written) fails with ENOSPC for paths containing marker."""
    hits = []
    real = os.fsync

    def fsync(fd):
        if marker in os.readlink(f"/proc/self/fd/{fd}"):
            hits.append(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return hits


def test_disk_full_while_writing_a_checkpoint(runner, data_dir, tmp_path, monkeypatch):
    before = _checksums(data_dir)
    hits = _enospc_on(monkeypatch, ".checkpoint")
    out = str(tmp_path / "run")
    r = runner.invoke(app, _train_args(data_dir, out, "--epochs", "2", "-q"))
    assert hits and r.exit_code == 1, r.output
    line = r.stderr.strip()
    assert line.count("\n") == 0 and line.startswith(f"Error: {tmp_path / '.run.checkpoint'}: no space left on device")
    assert "MB free" in line and "needs" in line
    assert _no_temp_files(tmp_path) == [] and not os.path.exists(out) and _checksums(data_dir) == before
    assert not os.path.exists(tmp_path / ".run.checkpoint")  # no epoch was saved: no folder holding only a marker


def test_checkpoint_larger_than_the_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    from imgclass_cli import fs
    from imgclass_cli.model import build
    from imgclass_cli.run import checkpoints as ckpt

    model = build.build_classifier("simple-cnn", 2, 32, weights="none")
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=100_000))
    folder = str(tmp_path / ".run.checkpoint")
    with pytest.raises(fs.WriteFailed) as e:
        ckpt.save(folder, model, None, {"epoch": 1})
    assert e.value.exit_code == 1
    assert e.value.message == f"{folder}: no space left on device (needs 0.6 MB, 0.1 MB free); free some space or " \
                              "write elsewhere"
    assert os.listdir(folder) == []  # refused before the first byte


def test_disk_full_while_prepare_writes_removes_the_staged_folder(runner, data_dir, tmp_path, monkeypatch):
    before = _checksums(data_dir)
    hits = _enospc_on(monkeypatch, ".partial-")
    r = runner.invoke(app, ["prepare", data_dir, str(tmp_path / "prepared"), "-q"])
    assert hits and r.exit_code == 1, r.output
    assert r.stderr.startswith(f"Error: {tmp_path / 'prepared'}: no space left on device") and "MB free" in r.stderr
    assert os.listdir(tmp_path) == [] and _checksums(data_dir) == before


# --- 13: the guide's pipelines are safe for any file name -------------------------------------------------------


@pytest.mark.skipif(not shutil.which("jq"), reason="jq not installed")
def test_guide_move_pipeline_is_safe_for_spaces_newlines_and_dot_git(runner, trained_run, test_dir, tmp_path,
                                                                     monkeypatch):
    guide = open(os.path.join(ROOT, "docs", "guide.md"), encoding="utf-8").read()
    assert "awk -F," not in guide  # the unsafe example is gone
    documented = next(line for line in guide.splitlines()
                      if line.startswith("imgclass predict") and "xargs -0" in line and "jq -j" in line)
    monkeypatch.chdir(tmp_path)
    os.makedirs(".git")
    open(".git/HEAD", "w").write("ref: refs/heads/main\n")
    _inbox(test_dir, tmp_path / "inbox")
    os.makedirs("sorted/bees")
    r = runner.invoke(app, ["predict", trained_run, "inbox", "-f", "jsonl"])
    assert r.exit_code == 0
    # The documented filter and mover, with this run's class and no confidence threshold.
    jq_filter = documented.split("jq -j '")[1].split("'")[0].replace('"bees"', '"red"').replace("0.9", "0")
    moved = subprocess.run(f"jq -j '{jq_filter}' | xargs -0 -r mv -t sorted/bees/ --", shell=True, input=r.stdout,
                           text=True, capture_output=True)
    assert moved.returncode == 0, moved.stderr
    red = {rec["path"] for rec in map(json.loads, r.stdout.splitlines()) if rec["label"] == "red"}
    assert len(red) >= 4 and {"inbox/new\nline.png", "inbox/a .git"} & red
    assert sorted(os.listdir("sorted/bees")) == sorted(os.path.basename(p) for p in red)
    assert not any(os.path.exists(p) for p in red) and os.path.exists(os.path.join("inbox", HOSTILE_BAD))
    assert os.path.isfile(".git/HEAD")
