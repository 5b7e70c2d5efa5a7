"""PNG figures of a run: the confusion matrix (counts and row-normalized), the training curves, the reliability
diagram and the grid of augmented training images.

matplotlib with the Agg backend only: no display, no GUI toolkit, safe in CI and over ssh.
"""

from __future__ import annotations

import io
import os
import textwrap

import numpy as np

from imgclass_cli import files, fs



def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _save(fig, path: str) -> None:
    # Rendered in memory, then written like every other file of a run (unique temporary name, fsync, rename).
    fs.write_bytes_atomic(path, png_bytes(fig))


def literal(text) -> str:
    """A user-derived name (a class, a path) as a figure shows it literally: control characters as escapes, and a
    `$` that does not start mathtext (a class named `$\\frac{x}$` made the confusion matrix fail to draw)."""
    from imgclass_cli.report.output import visible

    return visible(text).replace("$", r"\$")


def confusion_matrix(matrix, class_names: list[str], path: str, title: str = "") -> str:
    """Two panels side by side: counts, and rows normalized to 1 (per-class recall on the diagonal)."""
    fig = confusion_figure(matrix, class_names, title)
    try:
        _save(fig, path)
    finally:
        pyplot().close(fig)
    return path


def confusion_figure(matrix, class_names: list[str], title: str = ""):
    plt = pyplot()
    cm = np.asarray(matrix, dtype=float)
    n = len(class_names)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    side = max(4.0, 0.45 * n + 2.5)
    # constrained layout makes room for each panel's colour bar (with 2 classes the first one overlapped the
    # second panel).
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1, side), layout="constrained")
    try:
        for ax, data, fmt, name in ((axes[0], cm, "{:.0f}", "counts"), (axes[1], norm, "{:.2f}", "row-normalized")):
            im = ax.imshow(data, cmap="Blues", vmin=0, vmax=max(data.max(), 1e-9) if name == "counts" else 1)
            ax.set_title(name)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.set_xticks(range(n), labels=[literal(c) for c in class_names], rotation=90 if n > 6 else 0)
            ax.set_yticks(range(n), labels=[literal(c) for c in class_names])
            if n <= 30:  # beyond that the numbers are unreadable; the colours still tell the story
                limit = data.max() / 2 if data.max() > 0 else 0.5
                for i in range(n):
                    for j in range(n):
                        ax.text(j, i, fmt.format(data[i, j]), ha="center", va="center", fontsize=8,
                                color="white" if data[i, j] > limit else "black")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        if title:
            fig.suptitle(literal(title))
    except BaseException:
        plt.close(fig)
        raise
    return fig


def training_curves(history: list[dict], path: str) -> str | None:
    """Loss and accuracy per epoch (train and validation) from history rows; None when there is nothing to draw."""
    if not history:
        return None
    fig = curves_figure(history)
    try:
        _save(fig, path)
    finally:
        pyplot().close(fig)
    return path


def curves_figure(history: list[dict]):
    """The curves, with a vertical line where phase 2 (the unfrozen backbone) starts."""
    plt = pyplot()
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    phase2 = next((e for e, row in zip(epochs, history) if int(row.get("phase", 1)) == 2), None)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    try:
        for ax, metric in zip(axes, ("loss", "accuracy")):
            for key, style in ((metric, "-o"), (f"val_{metric}", "--o")):
                values = [row.get(key) for row in history]
                if any(v is not None for v in values):
                    ax.plot(epochs, [np.nan if v is None else v for v in values], style, markersize=3,
                            label="validation" if key.startswith("val_") else "train")
            if phase2 is not None:
                ax.axvline(phase2 - 0.5, color="grey", linestyle=":", label="phase 2 starts")
            ax.set_title(metric)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend()
    except BaseException:
        plt.close(fig)
        raise
    return fig


def save_training_curves(history: list[dict], folder: str, warn=None) -> str | None:
    """The hook training.run calls: a failed plot warns but never fails a finished training."""
    try:
        return training_curves(history, os.path.join(folder, files.CURVES_PNG))
    except fs.WriteFailed:  # a full disk is not a plotting problem: the run cannot be written whole
        raise
    except Exception as e:  # a plotting problem must not throw away a trained model
        if warn is not None:
            warn(f"could not draw the training curves: {e}")
        return None


def augment_preview(images: np.ndarray, path: str, title: str = "") -> str:
    """A grid of augmented training images (uint8, n x h x w x 3): what the model saw."""
    plt = pyplot()
    n = len(images)
    cols = min(8, max(1, n))
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows + (0.6 if title else 0)), squeeze=False)
    try:
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i < n:
                ax.imshow(images[i], interpolation="nearest")
        if title:
            fig.suptitle(title, fontsize=8, wrap=True)
        _save(fig, path)
    finally:
        plt.close(fig)
    return path


def save_augment_preview(images: np.ndarray, folder: str, title: str, warn=None) -> str | None:
    """The hook training.run calls: like the curves, a failed plot warns and the run is still written."""
    try:
        return augment_preview(images, os.path.join(folder, files.AUGMENT_PREVIEW), title)
    except fs.WriteFailed:
        raise
    except Exception as e:
        if warn is not None:
            warn(f"could not draw the augmentation preview: {e}")
        return None


# ---------------------------------------------------------------- TensorBoard (`train/finetune --tensorboard`)

def tensorboard_logdir(out: str) -> str:
    """Where the logs go while training, beside the run (like its checkpoint): the run folder appears only when
    complete. Watch them live with `tensorboard --logdir runs/`; at the end they move to RUN/tensorboard."""
    out = os.path.abspath(out)
    return os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.tensorboard")


def tensorboard_callback(logdir: str):
    """Per-epoch scalars in TensorBoard's layout (logdir/train, logdir/validation, tags epoch_loss, epoch_accuracy).

    Written with core `tf.summary.write` rather than keras.callbacks.TensorBoard, which needs the separate
    `tensorboard` package even to write logs; viewing them needs it (`pip install tensorboard`), training does not.
    """
    from tensorflow.core.framework import summary_pb2

    from imgclass_cli import fs
    from imgclass_cli._tf import keras, tf

    t = tf()
    # A leftover of an interrupted run would mix two trainings: removed, when it is ours (marker, log files only).
    if os.path.lexists(logdir) and not fs.remove_owned(logdir, fs.TENSORBOARD):
        from imgclass_cli.errors import ImgclassError

        raise ImgclassError(f"{logdir}: exists and is not imgclass's TensorBoard log folder; move it away")
    fs.make_owned_dir(logdir, fs.TENSORBOARD)
    scalar = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
                                         data_class=summary_pb2.DATA_CLASS_SCALAR)

    class _Scalars(keras().callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.writers = {}
            self.step = 0  # counts across fits, so a second phase continues the curves

        def _writer(self, name):
            if name not in self.writers:
                self.writers[name] = t.summary.create_file_writer(os.path.join(logdir, name))
            return self.writers[name]

        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                name, tag = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
                with self._writer(name).as_default():
                    t.summary.write(f"epoch_{tag}", t.constant(float(value)), step=self.step, metadata=scalar)
            self.step += 1
            for w in self.writers.values():
                w.flush()

        def on_train_end(self, logs=None):
            for w in self.writers.values():
                w.flush()

    return _Scalars()


def move_tensorboard_logs(logdir: str, out: str) -> str | None:
    import shutil


    if not os.path.isdir(logdir):
        return None
    dest = os.path.join(out, files.TENSORBOARD)  # a new run directory has none; its own marker keeps it ours
    shutil.move(logdir, dest)
    return dest


# ---------------------------------------------------------------- reliability diagram (`evaluate`)

def reliability(before, after, path: str, *, temperature: float, ece_before: float, ece_after: float,
                title: str = "") -> str:
    """The reliability diagram of the top-1 confidence before (T = 1) and after calibration: accuracy against mean
    confidence per bin (report.calibration.reliability_bins), the diagonal of a calibrated model, and how many
    images fall in each bin below; the ECE of each in the legend."""
    fig = reliability_figure(before, after, temperature=temperature, ece_before=ece_before, ece_after=ece_after,
                             title=title)
    try:
        _save(fig, path)
    finally:
        pyplot().close(fig)
    return path


def reliability_figure(before, after, *, temperature: float, ece_before: float, ece_after: float, title: str = ""):
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 7), height_ratios=(3, 1), sharex=True)
    try:
        top.plot([0, 1], [0, 1], ":", color="grey", label="calibrated (confidence = accuracy)")
        series = ((before, f"before: T = 1, ECE {ece_before:.4f}", "tab:red", "s--"),
                  (after, f"after: T = {temperature:.3g}, ECE {ece_after:.4f}", "tab:blue", "o-"))
        edges = [b.lower for b in before] + [before[-1].upper] if before else [0.0, 1.0]
        for bins, label, colour, style in series:
            used = [b for b in bins if b.images]
            top.plot([b.confidence for b in used], [b.accuracy for b in used], style, color=colour, markersize=5,
                     label=label)
            bottom.stairs([b.images for b in bins], edges, color=colour, linewidth=1.5)
        top.set_xlim(0, 1)
        top.set_ylim(0, 1.02)
        top.set_ylabel("accuracy in the bin")
        # Wrapped: a run and a data path can be longer than the figure is wide.
        top.set_title(textwrap.fill(f"reliability: {title}" if title else "reliability of the top-1 confidence", 60),
                      fontsize=10)
        top.grid(alpha=0.3)
        top.legend(loc="upper left", fontsize=9)
        bottom.set_xlabel(f"top-1 confidence ({len(before)} equal-width bins)")
        bottom.set_ylabel("images")
        bottom.grid(alpha=0.3)
    except BaseException:
        plt.close(fig)
        raise
    return fig
