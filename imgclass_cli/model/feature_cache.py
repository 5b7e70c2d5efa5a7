"""Exact feature cache: run the frozen part of a classifier once, then train the rest on its outputs.

A frozen backbone called with training=False gives the same output for the same input, so computing it
every epoch is redundant. Phase 1 trains dropout + classifier on the pooled backbone features; phase 2
trains the unfrozen top of the backbone (plus the head) on the cached activations of the last frozen layer.
Without augmentation this is the same computation as the plain path, batch for batch (tested); with
augmentation, `--aug-views K` augmented views of each image are cached and every epoch draws from them.
The cache lives in memory when it fits, else in .npy files on disk (memory-mapped) inside a new folder of
imgclass's own (mkdtemp, marked) under the chosen parent: only that folder is ever deleted, never the parent.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from imgclass_cli import fs
from imgclass_cli._tf import keras, tf, without_autotune
from imgclass_cli import config
from imgclass_cli.model.parts import parts


@dataclass
class FeatureCache:
    arrays: list[np.ndarray]  # one per input of the trainable part; first axis: views * images
    labels: np.ndarray
    n_images: int
    views: int
    folder: str | None = None  # on-disk cache (memory-mapped .npy files), or None in memory

    @property
    def nbytes(self) -> int:
        return sum(a.size * a.itemsize for a in self.arrays)

    def close(self) -> None:
        if self.folder:
            self.arrays = []
            fs.remove_owned(self.folder, fs.FEATURE_CACHE)  # left alone if someone put other files in it


def estimate_bytes(n: int, shapes: list[tuple]) -> int:
    return n * sum(math.prod(s) for s in shapes) * 4


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def split_backbone(base, top_layers: list):
    """(trunk, top): base == top(trunk(x)); the cut is every tensor a top layer takes from below it.

    Only the nodes of `base`'s own graph count: calling the top on cached inputs (head_model) adds nodes to the
    same layers, and a second split of the same model must not see them.
    """
    K = keras()
    ids = {id(layer) for layer in top_layers}
    cut = []
    for layer in top_layers:
        for i, node in enumerate(layer._inbound_nodes):
            if f"{id(layer)}_ib-{i}" not in base._nodes:  # Keras' node key (keras.src.ops.function.make_node_key)
                continue
            for t in node.input_tensors:
                if id(t._keras_history.operation) not in ids and not any(t is c for c in cut):
                    cut.append(t)
    trunk = K.Model(base.input, cut, name="trunk")
    top = K.Model(cut if len(cut) > 1 else cut[0], base.output, name="top")
    return trunk, top


def _storage(out, on_disk: bool):
    """The dtype a cached output is kept in: bfloat16 where the frozen part computes in bfloat16 (phase 2's trunk
    under mixed_bfloat16: kept exactly, in half the memory), else float32 (the pooled features of phase 1 leave the
    float32 pooling layer; float16 outputs are kept in float32). On disk always float32 (.npy has no bfloat16)."""
    if not on_disk and getattr(getattr(out, "dtype", None), "name", "") == "bfloat16":
        return out.dtype.as_numpy_dtype
    return np.float32


def compute(fn, batches: Iterable, n_total: int, shapes: list[tuple], *, folder: str | None = None,
            progress=None) -> tuple[list, np.ndarray]:
    """Run fn over (x, y) batches into arrays allocated at the first batch (np.memmap files in `folder` when
    given); progress(done, total) after each batch."""
    arrays: list = []
    labels = np.empty(n_total, dtype=np.int32)
    i = 0
    for x, y in batches:
        outs = fn(x)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        if not arrays:
            arrays = _allocate(outs, n_total, shapes, folder)
        b = int(y.shape[0])
        for a, o in zip(arrays, outs):
            a[i:i + b] = np.asarray(o)
        labels[i:i + b] = np.asarray(y)
        i += b
        if progress is not None:
            progress(i, n_total)
    if not arrays:
        arrays = _allocate([None] * len(shapes), n_total, shapes, folder)
    if i != n_total:  # unreadable files dropped by the pipeline would shift everything: refuse silently wrong data
        raise RuntimeError(f"feature cache: expected {n_total} images, got {i}")
    for a in arrays:
        if isinstance(a, np.memmap):
            a.flush()
    return arrays, labels


def _allocate(outs, n_total: int, shapes: list[tuple], folder: str | None) -> list:
    if folder:
        return [np.lib.format.open_memmap(os.path.join(folder, f"x{i}.npy"), mode="w+", dtype=np.float32,
                                          shape=(n_total, *s)) for i, s in enumerate(shapes)]
    return [np.empty((n_total, *s), dtype=_storage(o, False)) for o, s in zip(outs, shapes)]


def build(fn, shapes: list[tuple], make_batches, n_images: int, views: int, *, disk_parent: str | None,
          limit: int | None = None, info=lambda m: None, progress=None) -> FeatureCache:
    """Cache `views` passes of make_batches(view) through fn; on disk when the estimate exceeds `limit`
    (default config.MEMORY_CACHE_LIMIT_BYTES), in a new folder of its own inside `disk_parent`."""
    n_total = n_images * views
    size = estimate_bytes(n_total, shapes)
    limit = config.MEMORY_CACHE_LIMIT_BYTES if limit is None else limit
    on_disk = size > limit and disk_parent is not None
    disk_folder = fs.make_temp_dir(disk_parent, ".imgclass-features-", fs.FEATURE_CACHE) if on_disk else None
    where = f"on disk in {disk_folder}" if on_disk else "in memory"
    info(f"feature cache: {n_images} images x {views} view(s), about {human_bytes(size)} {where}")

    def all_views():
        for v in range(views):
            yield from make_batches(v)

    try:
        arrays, labels = compute(fn, all_views(), n_total, shapes, folder=disk_folder, progress=progress)
    except BaseException:
        if disk_folder:
            fs.remove_owned(disk_folder, fs.FEATURE_CACHE)
        raise
    return FeatureCache(arrays, labels, n_images, views, disk_folder)


def dataset(cache: FeatureCache, batch_size: int, seed: int, *, shuffle: bool):
    """A batched tf.data.Dataset of (features, label).

    Shuffling is the same op with the same seed and length as pipeline.build, so without augmentation
    (one view) the batches are exactly those of the plain path. With several views the dataset repeats;
    fit it with steps_per_epoch = ceil(images / batch_size).
    """
    t = tf()
    n = len(cache.labels)
    if cache.folder is None:
        x = tuple(cache.arrays) if len(cache.arrays) > 1 else cache.arrays[0]
        ds = t.data.Dataset.from_tensor_slices((x, cache.labels))
        if shuffle:
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)
    else:
        arrays, labels = cache.arrays, cache.labels
        dtypes = [t.float32] * len(arrays) + [t.int32]

        def gather(idx):
            idx = np.sort(idx)  # sequential reads from the memory map; order inside a batch does not matter
            return [a[idx] for a in arrays] + [labels[idx]]

        def load(idx):
            out = t.numpy_function(gather, [idx], dtypes)
            for o, a in zip(out, arrays):
                o.set_shape([None, *a.shape[1:]])
            out[-1].set_shape([None])
            x = tuple(out[:-1]) if len(arrays) > 1 else out[0]
            return x, out[-1]

        ds = t.data.Dataset.range(n)
        if shuffle:
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size).map(load)
    if shuffle and cache.views > 1:
        ds = ds.repeat()
    return without_autotune(ds.prefetch(t.data.AUTOTUNE))


def head_model(model, inputs_like, top=None):
    """The trainable part of `model` as its own model, sharing its layers (and so its weights).

    Phase 1 (top is None): pooled features -> head (dropout, classifier, softmax).
    Phase 2: activations of the last frozen layer -> unfrozen top of the backbone -> pool -> head.
    """
    K = keras()
    p = parts(model)
    inputs = [K.Input(shape=tuple(s), name=f"cached_{i}") for i, s in enumerate(inputs_like)]
    x = inputs if len(inputs) > 1 else inputs[0]
    if top is not None:
        x = top(x, training=False)  # like the backbone inside the full model: BatchNorm in inference mode
        x = p.pool(x)
    for layer in (*p.head, p.classifier, p.softmax):
        x = layer(x)
    return K.Model(inputs if len(inputs) > 1 else inputs[0], x, name="cached_head")


def frozen_part(model, trunk=None):
    """A function raw images -> what the cache stores: pooled features (phase 1) or the trunk's activations."""
    K = keras()
    p = parts(model)
    if trunk is None:
        extractor = K.Model(model.inputs, p.pool.output)
    else:
        pre = K.Model(model.inputs, p.preprocess.output)

        def extractor(x, training=False):
            return trunk(pre(x, training=False), training=False)

    t = tf()

    @t.function(reduce_retracing=True)
    def run(x):
        return extractor(x, training=False)

    return run
