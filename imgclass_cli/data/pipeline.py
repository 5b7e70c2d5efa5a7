"""tf.data pipelines: read, decode, resize, cache, shuffle, batch, augment, prefetch."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from imgclass_cli._tf import keras, tf, without_autotune
from imgclass_cli.config import MEMORY_CACHE_LIMIT_BYTES, Augment
from imgclass_cli.errors import first_line
from imgclass_cli.data import tfrecord
from imgclass_cli.data.folders import Sample
from imgclass_cli.data.imagefile import clean_tf_message, decode, probe_bytes


def augmentation(level: Augment, seed: int):
    """Keras preprocessing layers applied to training batches only; None for Augment.none."""
    if level == Augment.none:
        return None
    L = keras().layers
    if level == Augment.light:
        layers = [L.RandomFlip("horizontal", seed=seed), L.RandomRotation(0.05, seed=seed), L.RandomZoom(0.1, seed=seed)]
    else:
        layers = [
            L.RandomFlip("horizontal", seed=seed),
            L.RandomRotation(0.1, seed=seed),
            L.RandomZoom(0.2, seed=seed),
            L.RandomTranslation(0.1, 0.1, seed=seed),
            L.RandomContrast(0.2, seed=seed),
        ]
    return keras().Sequential(layers, name=f"augment_{level.value}")


def fits_in_memory(n_images: int, image_size: int) -> bool:
    return n_images * image_size * image_size * 3 <= MEMORY_CACHE_LIMIT_BYTES


@dataclass
class PipelineSpec:
    image_size: int
    batch_size: int
    seed: int
    augment: Augment = Augment.none


def build(samples: list[Sample], spec: PipelineSpec, *, training: bool, images: np.ndarray | None = None):
    """A batched tf.data.Dataset of (float32 images 0-255, int labels).

    `images`: the samples already decoded (uint8, spec.image_size, in sample order; verify.screen fills them in
    the same pass as the decode check): batches are sliced from memory, nothing is read or decoded. Otherwise
    decoded images are cached in memory when they fit (so later epochs never decode again), else files stream
    from disk every epoch. Training data is reshuffled every epoch with the seed, the same order either way.
    """
    t = tf()
    AUTOTUNE = t.data.AUTOTUNE
    size = spec.image_size
    if images is not None:
        labels = np.array([s.label for s in samples], dtype=np.int32)
        if images.shape != (len(samples), size, size, 3):
            raise ValueError(f"decoded images of shape {images.shape} for {len(samples)} samples at {size}px")
        ds = t.data.Dataset.from_tensor_slices((images, labels))
        if training:
            ds = ds.shuffle(len(samples), seed=spec.seed, reshuffle_each_iteration=True)
    else:
        cache = fits_in_memory(len(samples), size)
        if samples and samples[0].record is not None:
            # A TFRecord folder: the same images, labels and order, read from its shards (shuffled by shard and
            # through a buffer when streaming, since records cannot be read in an arbitrary order).
            ds = tfrecord.encoded(samples, shuffle_seed=spec.seed if training and not cache else None)
            ds = ds.map(lambda b, y, o, g, i: (decode(b, size, o), y), num_parallel_calls=AUTOTUNE,
                        deterministic=True)
        else:
            paths = [os.fsencode(s.path) for s in samples]
            labels = np.array([s.label for s in samples], dtype=np.int32)
            orientations = np.array([getattr(s, "orientation", 1) for s in samples], dtype=np.int32)
            ds = t.data.Dataset.from_tensor_slices((paths, labels, orientations))
            if training and not cache:
                ds = ds.shuffle(len(samples), seed=spec.seed, reshuffle_each_iteration=True)
            ds = ds.map(lambda p, y, o: (decode(t.io.read_file(p), size, o), y), num_parallel_calls=AUTOTUNE,
                        deterministic=True)
        if cache:
            ds = ds.cache()
            if training:
                ds = ds.shuffle(len(samples), seed=spec.seed, reshuffle_each_iteration=True)
    ds = ds.batch(spec.batch_size).map(lambda x, y: (t.cast(x, t.float32), y), num_parallel_calls=AUTOTUNE)
    aug = augmentation(spec.augment, spec.seed) if training else None
    if aug is not None:
        ds = ds.map(lambda x, y: (aug(x, training=True), y), num_parallel_calls=AUTOTUNE)
    return without_autotune(ds.prefetch(AUTOTUNE))


def decode_all(n: int, item: Callable[[int], tuple[str, int] | None], image_size: int, *, keep: bool,
               stop: Callable[[], bool] = lambda: False, stop_on_error: bool = False,
               progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray | None, list[int]]:
    """Decode n files with imagefile.decode in one parallel tf.data pipeline (all cores), each file once, in order.

    item(i) -> (path, EXIF orientation) of file i, or None to leave it out (the caller's cheap header probe, run
    for every file before the decode starts); stop() is asked after a file is left out and ends the pass. Returns (uint8 array (n, size, size, 3) with the decoded images, zeros where a file was
    left out or failed -- None without keep; the indices of files that failed to read or decode). A failure
    only drops its element (ignore_errors): the caller asks imagefile for the reason, file by file.
    progress(done, n) counts files handled, in order.
    """
    t = tf()
    # The header probe runs first, in Python: a from_generator pipeline left TensorFlow's threads spinning after
    # it finished (measured: the next 2 epochs took 11.1 s wall / 4.7 s system CPU instead of 4.6 / 0.4).
    yielded: list[int] = []
    paths, orients = [], []
    for i in range(n):
        it = item(i)
        if it is not None:
            yielded.append(i)
            paths.append(os.fsencode(it[0]))
            orients.append(it[1])
        elif stop():
            break
    images = np.zeros((n, image_size, image_size, 3), np.uint8) if keep else None
    if not yielded:
        return images, []
    ds = t.data.Dataset.from_tensor_slices((np.array(yielded, np.int64), np.array(paths, dtype=object),
                                            np.array(orients, np.int32)))
    ds = ds.map(lambda i, p, o: (i, decode(t.io.read_file(p), image_size, o)), num_parallel_calls=t.data.AUTOTUNE,
                deterministic=True)
    ds = without_autotune(ds.ignore_errors().batch(64).prefetch(4))
    failed: list[int] = []
    k = 0  # position in `yielded`: every yielded index before the next one received has failed
    for idx, x in ds:
        idx = idx.numpy()
        for r in idx:
            while yielded[k] != r:
                failed.append(yielded[k])
                k += 1
            k += 1
        if images is not None:
            images[idx] = x.numpy()
        if progress is not None:
            progress(int(idx[-1]) + 1, n)
        if failed and stop_on_error:
            return images, failed
    failed.extend(yielded[k:])
    if progress is not None:
        progress(n, n)
    return images, failed


@dataclass
class LoadedBatch:
    paths: list[str]
    images: np.ndarray | None  # (n_ok, size, size, 3) float32 of the readable files, in order
    ok: list[bool]  # one per path
    errors: list[str | None]  # one per path: None or the reason it could not be read
    extra: list[dict] = field(default_factory=list)  # one per path: for a record, where it is stored ({} for a file)


def _load_one(path: str, image_size: int, contents: bytes | None = None):
    """Decode one file (or the bytes of a record, already read): (image, None) or (None, why not)."""
    t = tf()
    try:
        if contents is None:
            with open(path, "rb") as f:
                contents = f.read()
        if not contents:
            return None, "empty file"
        # Header first (cheap): a 20000x20000 image is refused before it is decoded; EXIF orientation as in training.
        info = probe_bytes(contents, path)
        if not info.ok:
            return None, info.reason
        return decode(t.constant(contents), image_size, info.orientation).numpy(), None
    except OSError as e:
        return None, e.strerror or str(e)
    except (t.errors.InvalidArgumentError, t.errors.OpError) as e:
        return None, f"cannot decode image: {clean_tf_message(str(getattr(e, 'message', e)))}"


def _with_contents(items: Iterable) -> Iterator[tuple[str, bytes | None, dict]]:
    """(path, bytes or None, extra) per item: a path is read later by a worker; the records of a TFRecord folder
    (consecutive Samples of it) are read from its shards, in their record order."""
    run: list = []
    for item in items:
        if isinstance(item, Sample) and item.record is not None:
            if run and run[-1].record.group[0] != item.record.group[0]:
                yield from _records(run)
                run = []
            run.append(item)
            continue
        if run:
            yield from _records(run)
            run = []
        yield item, None, {}
    if run:
        yield from _records(run)


def _records(samples: list) -> Iterator[tuple[str, bytes, dict]]:
    for s, contents in tfrecord.iter_contents(tfrecord.samples_in_order(samples)):
        yield s.path, contents, {"source": s.record.source, "shard": s.record.shard, "record": s.record.record}


def iter_batches(paths: Iterable, image_size: int, batch_size: int, workers: int = 4) -> Iterator[LoadedBatch]:
    """Decode paths (or records: Samples of a TFRecord folder) in order, batch by batch, in bounded memory;
    unreadable files are reported, not raised."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        chunk: list = []
        for item in _with_contents(paths):
            chunk.append(item)
            if len(chunk) == batch_size:
                yield _load_chunk(pool, chunk, image_size)
                chunk = []
        if chunk:
            yield _load_chunk(pool, chunk, image_size)


def _load_chunk(pool, chunk: list, image_size: int) -> LoadedBatch:
    results = list(pool.map(lambda item: _load_one(item[0], image_size, item[1]), chunk))
    arrays = [a for a, _ in results if a is not None]
    images = np.stack(arrays).astype(np.float32) if arrays else None
    return LoadedBatch([p for p, _, _ in chunk], images, [a is not None for a, _ in results], [e for _, e in results],
                       [x for _, _, x in chunk])


def read_error_message(e, samples: list) -> str:
    """What a tf.data read or decode error during an epoch means: for records, the shard and source it came from."""
    records = [s for s in samples if s.record is not None]
    if records:
        return tfrecord.read_error(e, tfrecord.samples_in_order(records))
    return first_line(getattr(e, "message", e))
