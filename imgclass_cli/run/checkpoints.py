"""Checkpoints every epoch, Ctrl-C -> checkpoint, --resume, early stopping.

An unfinished run keeps its checkpoint in a hidden folder beside the run directory, `.NAME.checkpoint/`
(not inside the staging folder, which is created and renamed only once training is done, so that an
interrupted run never leaves a half run directory). `--resume NAME` (or the checkpoint folder itself)
finds it there; a finished run deletes it.
"""

from __future__ import annotations

import json
import os

import numpy as np

from imgclass_cli import fs
from imgclass_cli._tf import keras
from imgclass_cli.errors import ImgclassError

STATE = "state.json"
WEIGHTS = "model.weights.h5"
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


def save(folder: str, model, optimizer, state: dict) -> None:
    """Weights of the full model, the optimizer's variables and where training stands; each file atomic."""
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f"tmp-{os.getpid()}.weights.h5")
    model.save_weights(tmp)
    os.replace(tmp, os.path.join(folder, WEIGHTS))
    if optimizer is not None and optimizer.built:
        tmp = os.path.join(folder, f"tmp-{os.getpid()}.npz")
        with open(tmp, "wb") as f:
            np.savez(f, *[v.numpy() for v in optimizer.variables])
        os.replace(tmp, os.path.join(folder, OPTIMIZER))
    fs.write_json_atomic(os.path.join(folder, STATE), state)


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


def early_stopping(patience: int):
    return keras().callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
