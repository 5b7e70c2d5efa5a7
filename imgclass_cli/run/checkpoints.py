"""Checkpoints every epoch, Ctrl-C -> checkpoint, --resume, early stopping.

An unfinished run keeps its checkpoint in a hidden folder beside the run directory, `.NAME.checkpoint/`
(not inside the staging folder, which is created and renamed only once training is done, so that an
interrupted run never leaves a half run directory). `--resume NAME` (or the checkpoint folder itself)
finds it there; a finished run deletes it.

A checkpoint is untrusted input (it may be copied or crafted): state.json is validated, and it never says where
to write or what to delete. The run a checkpoint continues is the folder it belongs to, NAME beside `.NAME.checkpoint`.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np

from imgclass_cli import files, fs, interrupts
from imgclass_cli._tf import keras
from imgclass_cli.config import TrainConfig
from imgclass_cli.errors import ImgclassError, first_line



def checkpoint_dir(out: str) -> str:
    out = os.path.abspath(out)
    return os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.checkpoint")


def run_of(folder: str) -> str | None:
    """The run directory a checkpoint folder `.NAME.checkpoint` belongs to (NAME beside it), else None."""
    folder = os.path.abspath(folder)
    name = os.path.basename(folder)
    if name.startswith(".") and name.endswith(".checkpoint") and len(name) > len("..checkpoint"):
        return os.path.join(os.path.dirname(folder), name[1:-len(".checkpoint")])
    return None


def find_checkpoint(path: str) -> tuple[str, str]:
    """(checkpoint folder, run directory) of --resume PATH: the run's --out path or its `.NAME.checkpoint` folder."""
    out = run_of(path)
    candidates = [(os.path.abspath(path), out)] if out else []
    candidates.append((checkpoint_dir(path), os.path.abspath(path)))
    for folder, run in candidates:
        if os.path.exists(os.path.join(folder, files.STATE)):
            if not fs.is_kind(folder, fs.CHECKPOINT):
                raise ImgclassError(f"--resume {path}: {folder} is not an imgclass checkpoint (no marker)")
            return folder, run
    raise ImgclassError(f"--resume {path}: no checkpoint of an unfinished run there (looked for {checkpoint_dir(path)})")


def read_state(folder: str) -> dict:
    """state.json, validated: {"config": TrainConfig, "history": [rows], "phase": 1|2, "epoch": n}. A violation is
    exit 2 naming the file and the field; its "out" (where the run was) is ignored."""
    path = os.path.join(folder, files.STATE)
    try:
        raw = fs.read_json(path)
    except (OSError, ValueError) as e:
        raise ImgclassError(f"{path}: cannot read the checkpoint state ({e})") from None

    def bad(field: str):
        return ImgclassError(f"{path}: field {field} is missing or invalid; the checkpoint cannot be resumed")

    if not isinstance(raw, dict):
        raise bad("(top level)")
    config = TrainConfig.from_dict(raw.get("config"), source=path, prefix="config.")
    phase, epoch, history = raw.get("phase"), raw.get("epoch"), raw.get("history")
    if type(phase) is not int or phase not in (1, 2):
        raise bad("phase")
    if type(config.epochs) is not int:  # a checkpoint's run had resolved its number of epochs
        raise bad("config.epochs")
    limit = config.epochs if phase == 1 else config.finetune_epochs
    if type(epoch) is not int or not 0 <= epoch <= limit:
        raise bad("epoch")
    if not isinstance(history, list) or len(history) > config.epochs + config.finetune_epochs:
        raise bad("history")
    for i, row in enumerate(history):
        if not isinstance(row, dict) or not all(isinstance(k, str) and type(v) in (int, float) for k, v in row.items()):
            raise bad(f"history[{i}]")
    rng = raw.get("rng")  # None: a checkpoint of an older imgclass, which did not save the generators
    if rng is not None and (not isinstance(rng, list) or len(rng) > MAX_RNG_STATES or not all(
            isinstance(s, list) and len(s) <= 4 and all(type(x) is int and 0 <= x < 2**32 for x in s) for s in rng)):
        raise bad("rng")
    iterations = raw.get("data_iterations", 0)
    if type(iterations) is not int or not 0 <= iterations <= 4 * (config.epochs + config.finetune_epochs) + 4:
        raise bad("data_iterations")  # iterators made over the training data: about two an epoch
    return {"config": config, "phase": phase, "epoch": epoch, "history": history, "rng": rng,
            "data_iterations": iterations}


MAX_RNG_STATES = 10_000  # seed generators of a model and its augmentation: a few dozen at most


def rng_variables(model, layers=()) -> list:
    """The state of every random number generator training draws from, in a fixed order: the seed generators of
    the model's layers (Dropout), which Keras keeps out of get_weights, then those of `layers` (the augmentation
    mapped over the training data). Saved with every checkpoint so that a resumed run draws what the
    uninterrupted run would have drawn."""
    weights = {id(v) for v in model.weights}
    found = [v for v in model.variables if id(v) not in weights]
    for layer in layers:
        found += [v for v in layer.variables if id(v) not in {id(w) for w in layer.weights}]
    return found


def restore_rng(folder: str, saved: list, variables: list) -> None:
    """Set the generators rng_variables() lists to the states a checkpoint saved (exit 2 if they do not match)."""
    if saved is None:
        return
    if len(saved) != len(variables) or any(len(s) != int(np.prod(v.shape)) for s, v in zip(saved, variables)):
        raise ImgclassError(f"{os.path.join(folder, files.STATE)}: field rng holds {len(saved)} generator states, this "
                            f"model and augmentation have {len(variables)}; the checkpoint cannot be resumed")
    for value, var in zip(saved, variables):
        var.assign(np.array(value, dtype=np.dtype(getattr(var.dtype, "as_numpy_dtype", var.dtype))).reshape(var.shape))


def _npz(arrays: list) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, *arrays)
    return buf.getvalue()


def save(folder: str, model, optimizer, state: dict, rng: list = ()) -> None:
    """Weights of the full model, the optimizer's variables and where training stands.

    Serialized in memory first (plain NumPy, no HDF5 writer that can crash natively on a full disk), the free
    space checked against their size, then written all together through fs.write_files_atomic: unique
    temporary names, fsync, rename; a failure leaves the previous checkpoint whole and no temporary file."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise fs.WriteFailed(folder, e) from None
    blobs = {os.path.join(folder, files.WEIGHTS): _npz(model.get_weights())}
    if optimizer is not None and optimizer.built:
        blobs[os.path.join(folder, files.OPTIMIZER)] = _npz([v.numpy() for v in optimizer.variables])
    state = {**state, "rng": [[int(x) for x in np.asarray(v.numpy()).ravel()] for v in rng]}
    blobs[os.path.join(folder, files.STATE)] = (json.dumps(state, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    fs.write_files_atomic(blobs)


def read_arrays(path: str, expected: list[tuple[tuple, object]]) -> list[np.ndarray]:
    """The arrays of a checkpoint's .npz file (untrusted), checked against the (shape, dtype) list the model or
    optimizer holds: the shapes are read from each member's header before its data, so a crafted header cannot size
    an allocation. Anything else than those arrays is exit 2 naming the file."""
    import zipfile

    def bad(why: str):
        return ImgclassError(f"{path}: {why}; the checkpoint cannot be resumed (start over with --force)")

    try:
        with zipfile.ZipFile(path) as z:
            names = [f"arr_{i}.npy" for i in range(len(expected))]
            if sorted(z.namelist()) != sorted(names):
                raise bad(f"holds {len(z.namelist())} arrays, expected {len(expected)}")
            arrays = []
            for name, (shape, dtype) in zip(names, expected):
                with z.open(name) as f:
                    version = np.lib.format.read_magic(f)
                    header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                              else np.lib.format.read_array_header_2_0)(f)
                    if tuple(header[0]) != tuple(shape) or np.dtype(header[2]) != np.dtype(dtype):
                        raise bad(f"array {name} is {header[2]} {tuple(header[0])}, expected {np.dtype(dtype)} "
                                  f"{tuple(shape)}")
                with z.open(name) as f:
                    arrays.append(np.lib.format.read_array(f, allow_pickle=False))
    except ImgclassError:
        raise
    except OSError as e:
        raise bad(f"cannot read it ({e.strerror or e})") from None
    except (ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError) as e:
        raise bad(f"not a complete checkpoint file ({first_line(e)})") from None
    return arrays


def load_weights(folder: str, model) -> None:
    expected = [(tuple(w.shape), w.dtype) for w in model.get_weights()]
    model.set_weights(read_arrays(os.path.join(folder, files.WEIGHTS), expected))


def restore_optimizer(folder: str, optimizer, variables) -> bool:
    path = os.path.join(folder, files.OPTIMIZER)
    if not os.path.exists(path):
        return False
    optimizer.build(variables)
    values = read_arrays(path, [(tuple(v.shape), np.dtype(getattr(v.dtype, "as_numpy_dtype", v.dtype)))
                                for v in optimizer.variables])
    for var, value in zip(optimizer.variables, values):
        var.assign(value)
    return True


def remove_unused(folder: str) -> None:
    """A checkpoint folder no epoch was saved into (the run failed or was interrupted before its first epoch
    ended) holds only its marker: remove it, through the ownership rule, so a failed run leaves nothing behind."""
    if not os.path.lexists(os.path.join(folder, files.STATE)):
        fs.remove_owned(folder, fs.CHECKPOINT)


def check_not_interrupted(out: str, force: bool, resume_command: str) -> None:
    """Before a new run on OUT: an interrupted run's checkpoint there is kept (a CI retry of the same command must
    not throw hours of training away) unless --force says to start over; it is removed only through the ownership
    rule."""
    folder = checkpoint_dir(out)
    if not os.path.lexists(os.path.join(folder, files.STATE)):
        return
    if not force:
        try:
            done = read_state(folder)
            where = f" (phase {done['phase']}, {done['epoch']} epoch(s) done)"
        except ImgclassError:
            where = ""
        raise ImgclassError(f"{out}: an interrupted run's checkpoint is in {folder}{where}; continue it with: "
                            f"{resume_command}, or start over with --force")
    if not fs.remove_owned(folder, fs.CHECKPOINT):
        raise ImgclassError(f"{folder}: exists and is not an imgclass checkpoint holding only checkpoint files; "
                            "move it away or choose another --out")


def remove(folder: str) -> None:
    """Delete a finished run's checkpoint folder, only when it holds nothing but checkpoint files."""
    fs.remove_owned(folder, fs.CHECKPOINT)


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
