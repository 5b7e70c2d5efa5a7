"""The CLI as a person runs it: end to end in a real pseudo-terminal, where rich draws live bars (issue 10).

Real processes under a pty: slow (TensorFlow starts in each), so few and tiny."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

pytestmark = pytest.mark.slow


def run_in_pty(args, *, interrupt_after: str | None = None, timeout: float = 240, columns: int = 120) -> tuple[int, str]:
    """Run `imgclass ARGS` with stdin, stdout and stderr on a pty of `columns` x 40; read until EOF. With
    interrupt_after, send SIGINT (Ctrl-C) once that text has appeared. Returns (exit code, output with ANSI codes
    removed)."""
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = dict(os.environ, PYTHONPATH=ROOT, TERM="xterm-256color", COLUMNS=str(columns), LINES="40")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "imgclass_cli", *args], stdin=slave, stdout=slave, stderr=slave,
                            env=env, close_fds=True)
    os.close(slave)
    chunks, sent, deadline = [], False, time.time() + timeout
    try:
        while time.time() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
            if interrupt_after and not sent and interrupt_after in ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")):
                proc.send_signal(signal.SIGINT)
                sent = True
        code = proc.wait(timeout=max(1.0, deadline - time.time()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))


def epoch_labels(text: str) -> list[str]:
    return sorted(set(re.findall(r"epoch \d+/\d+", text)), key=lambda s: int(s.split()[1].split("/")[0]))


def assert_clean(code: int, text: str, expected: int = 0) -> None:
    assert code == expected, text[-3000:]
    assert "Traceback" not in text and "unexpected" not in text, text[-3000:]


def test_train_interrupt_resume_evaluate_predict_in_a_terminal(data_dir, test_dir, tmp_path):
    out = str(tmp_path / "run")
    train = ["train", data_dir, "--arch", "cnn", "--image-size", "16", "--epochs", "4", "--batch-size", "2",
             "--out", out]
    # Ctrl-C once epoch 2 has started: epoch 1 is done and checkpointed.
    code, text = run_in_pty(train, interrupt_after="epoch 2/4")
    assert_clean(code, text, 130)
    # The message starts a line of its own: nothing of the bar before it on that line.
    assert re.search(r"(^|\n)Error: interrupted \(SIGINT\); checkpoint saved", text.replace("\r", "\n")), text[-2000:]
    from imgclass_cli.run import checkpoints as ckpt

    done = ckpt.read_state(ckpt.checkpoint_dir(out))["epoch"]
    assert 1 <= done < 4

    code, text = run_in_pty(["train", data_dir, "--resume", out], columns=80)
    assert_clean(code, text)
    # At 80 columns every epoch line keeps its numbers (the bar and the times go first): old code cut it at "val_ac".
    lines = [line for line in re.split(r"[\r\n]", text) if line.startswith("epoch ")]
    full = re.compile(r"epoch \d/4 .*loss \d+\.\d{3} acc \d\.\d{3} val_loss \d+\.\d{3} val_acc \d\.\d{3}$")
    assert lines and all(len(line) <= 80 for line in lines), lines
    assert {line.split()[1] for line in lines if full.search(line)} == {f"{e}/4" for e in range(done + 1, 5)}, lines
    labels = epoch_labels(text)
    assert labels[0] == f"epoch {done + 1}/4", labels
    assert "epoch 1/4" not in labels and labels[-1] == "epoch 4/4", labels
    assert f"saved {out}" in text

    code, text = run_in_pty(["evaluate", out, test_dir])
    assert_clean(code, text)
    assert "accuracy" in text

    code, text = run_in_pty(["predict", out, os.path.join(test_dir, "red")])
    assert_clean(code, text)
    assert text.count("img0") == 6  # one row per image of the folder
    assert "/6" in text and "/?" not in text  # the bar counts towards the number of inputs (old code: "6/?")


def test_two_phase_finetune_in_a_terminal(data_dir, tmp_path):
    out = str(tmp_path / "ft")
    code, text = run_in_pty(["finetune", data_dir, "--weights", "none", "--image-size", "32", "--epochs", "1",
                             "--unfreeze", "5", "--finetune-epochs", "1", "--out", out])
    assert_clean(code, text)
    assert "phase 1:" in text and "phase 2:" in text
    assert re.search(r"the top 5 backbone layers at lr [0-9.e-]+: \d+ train, \d+ BatchNorm stay frozen", text), text
    assert text.index("phase 2:") < text.rindex("epoch 1/1")  # phase 2 drew its own bar
    assert os.path.exists(os.path.join(out, "model.keras"))
