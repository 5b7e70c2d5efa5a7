"""The CLI as a person runs it: end to end in a real pseudo-terminal, where rich draws live bars (issue 10).

Real processes under a pty: slow (TensorFlow starts in each), so few and tiny: one for the train that Ctrl-C
stops, one that runs the other commands in turn (tests/conftest.py commands_script)."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from tests.conftest import commands_argv, split_commands

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

pytestmark = pytest.mark.slow


def run_in_pty(args, *, interrupt_after: str | None = None, timeout: float = 240, columns: int = 120) -> tuple[int, str]:
    """Run `imgclass ARGS` with stdin, stdout and stderr on a pty of `columns` x 40; read until EOF. With
    interrupt_after, send SIGINT (Ctrl-C) once that text has appeared. Returns (exit code, output with ANSI codes
    removed)."""
    return _pty([sys.executable, "-m", "imgclass_cli", *args], interrupt_after, timeout, columns)


def run_commands_in_pty(commands: list[list[str]], timeout: float = 240, columns: int = 120) -> list[tuple[int, str]]:
    """The imgclass commands in turn in one process on a pty, `timeout` seconds each: (exit code, output) of each."""
    code, text = _pty(commands_argv(commands), None, timeout * len(commands), columns)
    assert code == 0 and "Traceback" not in text, text[-3000:]
    return split_commands(text, len(commands))


def _pty(argv: list[str], interrupt_after: str | None, timeout: float, columns: int) -> tuple[int, str]:
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = dict(os.environ, PYTHONPATH=ROOT, TERM="xterm-256color", COLUMNS=str(columns), LINES="40")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
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


@pytest.fixture(scope="module")
def terminal(data_dir, test_dir, tmp_path_factory):
    """Two processes on a pty serve both tests (one worker runs them: conftest ONE_WORKER): train, stopped by Ctrl-C once
    epoch 2 has started; then, in one fresh process, its resume (the first command there), evaluate, predict and a
    two-phase finetune, on a terminal of 80 columns."""
    from imgclass_cli import files
    from imgclass_cli.run import checkpoints as ckpt

    root = tmp_path_factory.mktemp("terminal")
    out, ft = str(root / "run"), str(root / "ft")
    train = ["train", data_dir, "--arch", "cnn", "--image-size", "16", "--epochs", "4", "--batch-size", "2",
             "--out", out]
    interrupted = run_in_pty(train, interrupt_after="epoch 2/4")  # epoch 1 is done and checkpointed
    state = os.path.join(ckpt.checkpoint_dir(out), files.STATE)
    done = ckpt.read_state(ckpt.checkpoint_dir(out))["epoch"] if os.path.exists(state) else None
    later = run_commands_in_pty([["train", data_dir, "--resume", out], ["evaluate", out, test_dir],
                                 ["predict", out, os.path.join(test_dir, "red")],
                                 ["finetune", data_dir, "--weights", "none", "--image-size", "32", "--epochs", "1",
                                  "--unfreeze", "5", "--finetune-epochs", "1", "--out", ft]], columns=80)
    return SimpleNamespace(out=out, ft=ft, interrupted=interrupted, done=done, resumed=later[0], evaluated=later[1],
                           predicted=later[2], finetuned=later[3])


def test_train_interrupt_resume_evaluate_predict_in_a_terminal(terminal):
    out = terminal.out
    code, text = terminal.interrupted
    assert_clean(code, text, 130)
    # The message starts a line of its own: nothing of the bar before it on that line.
    assert re.search(r"(^|\n)Error: interrupted \(SIGINT\); checkpoint saved", text.replace("\r", "\n")), text[-2000:]
    done = terminal.done
    assert done is not None and 1 <= done < 4

    code, text = terminal.resumed
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

    code, text = terminal.evaluated
    assert_clean(code, text)
    assert "accuracy" in text

    code, text = terminal.predicted
    assert_clean(code, text)
    # One row per image of the folder (at 80 columns the long path folds, so count the confidence cells).
    assert len(re.findall(r"│\s+[01]\.\d{4}\s+│", text)) == 6, text
    assert "/6" in text and "/?" not in text  # the bar counts towards the number of inputs (old code: "6/?")


def test_two_phase_finetune_in_a_terminal(terminal):
    code, text = terminal.finetuned
    assert_clean(code, text)
    assert "phase 1:" in text and "phase 2:" in text
    assert re.search(r"the top 5 backbone layers at lr [0-9.e-]+: \d+ train, \d+ BatchNorm stay frozen", text), text
    assert text.index("phase 2:") < text.rindex("epoch 1/1")  # phase 2 drew its own bar
    assert os.path.exists(os.path.join(terminal.ft, "model.keras"))
