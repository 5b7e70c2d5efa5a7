"""Checkpoints every epoch, Ctrl-C -> checkpoint, --resume, early stopping.

An unfinished run keeps its checkpoint in a hidden folder beside the run directory, `.NAME.checkpoint/`
(not inside the staging folder, which is created and renamed only once training is done, so that an
interrupted run never leaves a half run directory). `--resume NAME` (or the checkpoint folder itself)
finds it there; a finished run deletes it.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np

from imgclass_cli import fs, interrupts
from imgclass_cli._tf import keras
from imgclass_cli.errors import ImgclassError

STATE = "state.json"
WEIGHTS = "weights.npz"
OPTIMIZER = "optimizer.npz"


def checkpoint_dir(out: str) -> str:
    out = os.path.abspath(out)
    return os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.checkpoint")


def find_checkpoint(path: str) -> str:
    """The checkpoint folder of a run given as --resume: the run's --out path or the checkpoint folder."""
    for candidate in (path, checkpoint_dir(path)):
        if os.path.exists(os.path.join(candidate, STATE)):
            return candidate
    raise ImgclassError(f"--resume {path}: no checkpoint of an unfinished run there (looked for {checkpoint_dir(path)})")


def read_state(folder: str) -> dict:
    with open(os.path.join(folder, STATE), encoding="utf-8") as f:
        return json.load(f)


def _npz(arrays: list) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, *arrays)
    return buf.getvalue()


def save(folder: str, model, optimizer, state: dict) -> None:
    """Weights of the full model, the optimizer's variables and where training stands.

    Serialized in memory first (plain NumPy, no HDF5 writer that can crash natively on a full disk), the free
    space checked against their size, then written all together through fs.write_files_atomic: unique
    temporary names, fsync, rename; a failure leaves the previous checkpoint whole and no temporary file."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise fs.WriteFailed(folder, e) from None
    files = {os.path.join(folder, WEIGHTS): _npz(model.get_weights())}
    if optimizer is not None and optimizer.built:
        files[os.path.join(folder, OPTIMIZER)] = _npz([v.numpy() for v in optimizer.variables])
    files[os.path.join(folder, STATE)] = (json.dumps(state, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    fs.write_files_atomic(files)


def load_weights(folder: str, model) -> None:
    with np.load(os.path.join(folder, WEIGHTS)) as saved:
        model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])


def restore_optimizer(folder: str, optimizer, variables) -> bool:
    path = os.path.join(folder, OPTIMIZER)
    if not os.path.exists(path):
        return False
    optimizer.build(variables)
    saved = np.load(path)
    values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if len(values) != len(optimizer.variables):
        return False
    for var, value in zip(optimizer.variables, values):
        var.assign(value)
    return True


def remove(folder: str) -> None:
    fs.remove_tree(folder)


def checkpoint_callback(save_fn):
    """Calls save_fn(epochs_done, logs) after every epoch."""

    class _Checkpoint(keras().callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            save_fn(epoch + 1, dict(logs or {}))

    return _Checkpoint()


def safe_points():
    """Where a deferred SIGINT/SIGTERM is acted on: after a batch (training or validation) and after an epoch's
    checkpoint; put it last, so that the epoch's checkpoint and progress line come first."""

    class _SafePoints(keras().callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            interrupts.check()

        def on_test_batch_end(self, batch, logs=None):
            interrupts.check()

        def on_epoch_end(self, epoch, logs=None):
            interrupts.check()

    return _SafePoints()


def early_stopping(patience: int):
    return keras().callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
