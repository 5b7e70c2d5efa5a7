"""tf.data pipelines: read, decode, resize, cache, shuffle, batch, augment, prefetch."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from imgclass_cli._tf import keras, tf, without_autotune
from imgclass_cli.config import MEMORY_CACHE_LIMIT_BYTES, Augment, Resize
from imgclass_cli.errors import first_line
from imgclass_cli.data import tfrecord
from imgclass_cli.data.folders import Sample
from imgclass_cli.data.imagefile import clean_tf_message, decode, probe_bytes


# --augment strong: RandAugment's two random operations at Keras' default strength, then per batch MixUp (Keras'
# alpha for ImageNet) or CutMix, half the batches each (timm's switch probability).
RANDAUGMENT_OPS, RANDAUGMENT_FACTOR = 2, 0.5
MIXUP_ALPHA, CUTMIX_FACTOR, CUTMIX_SHARE = 0.2, 1.0, 0.5


def augmentation(level: Augment, seed: int):
    """Keras preprocessing layers applied to each training image (batched); None for Augment.none. The batch
    mixing of `strong` (MixUp, CutMix) is `mixing`."""
    if level == Augment.none:
        return None
    L = keras().layers
    if level == Augment.light:
        layers = [L.RandomFlip("horizontal", seed=seed), L.RandomRotation(0.05, seed=seed), L.RandomZoom(0.1, seed=seed)]
    else:
        layers = [L.RandomFlip("horizontal", seed=seed),
                  L.RandAugment(value_range=(0, 255), num_ops=RANDAUGMENT_OPS, factor=RANDAUGMENT_FACTOR, seed=seed)]
    return keras().Sequential(layers, name=f"augment_{level.value}")


def mixes_labels(spec: "PipelineSpec") -> bool:
    """Whether the training labels are mixed one-hot vectors (MixUp, CutMix) instead of class indices."""
    return spec.augment == Augment.strong and spec.num_classes > 1


def describe_augmentation(level: Augment, mixing: bool = True) -> str:
    """The augmentations --augment applies, in words (train and finetune print it)."""
    if level == Augment.light:
        return "horizontal flip, rotation up to 0.05 turn, zoom up to 10%"
    if level == Augment.none:
        return "none"
    text = f"horizontal flip, RandAugment ({RANDAUGMENT_OPS} random operations a batch at strength {RANDAUGMENT_FACTOR})"
    if mixing:
        return text + f", then per batch MixUp (alpha {MIXUP_ALPHA}) or CutMix ({CUTMIX_SHARE:.0%} of batches each)"
    return text + "; no MixUp/CutMix (the feature cache stores one label per image)"


def mixing(num_classes: int, seed: int):
    """(images, labels) batch -> (images, mixed one-hot labels): MixUp or CutMix, chosen per batch by a seeded
    draw on the batch's position (`index`)."""
    t = tf()
    L = keras().layers
    mixup, cutmix = L.MixUp(alpha=MIXUP_ALPHA, seed=seed), L.CutMix(factor=CUTMIX_FACTOR, seed=seed)

    def mix(index, x, y):
        data = {"images": x, "labels": t.one_hot(t.cast(t.reshape(y, [-1]), t.int32), num_classes)}
        draw = t.random.stateless_uniform([], seed=t.stack([t.constant(seed % 2**31, t.int64), index]))
        out = t.cond(draw < CUTMIX_SHARE, lambda: cutmix(data, training=True), lambda: mixup(data, training=True))
        return t.cast(out["images"], t.float32), t.cast(out["labels"], t.float32)

    mix.layers = [mixup, cutmix]  # their seed generators: what a checkpoint saves (random_layers)
    return mix


def fits_in_memory(n_images: int, image_size: int) -> bool:
    return n_images * image_size * image_size * 3 <= MEMORY_CACHE_LIMIT_BYTES


@dataclass
class PipelineSpec:
    image_size: int
    batch_size: int
    seed: int
    augment: Augment = Augment.none
    resize: Resize = Resize.squash  # how the decoder makes the image square (as the model's Resizing layer)
    num_classes: int = 0  # with --augment strong: labels become mixed one-hot vectors (MixUp, CutMix) of this length


def plain(fn):
    """A map function traced as written, without autograph: decode and the casts have no Python control flow on
    tensors (imagefile.decode branches with tf.cond and tf.switch_case), and autograph's rewrite of them is CPU time
    at every command's first decode."""
    return tf().autograph.experimental.do_not_convert(fn)


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
            ds = ds.map(plain(lambda b, y, o, g, i: (decode(b, size, o, spec.resize), y)),
                        num_parallel_calls=AUTOTUNE, deterministic=True)
        else:
            paths = [os.fsencode(s.path) for s in samples]
            labels = np.array([s.label for s in samples], dtype=np.int32)
            orientations = np.array([getattr(s, "orientation", 1) for s in samples], dtype=np.int32)
            ds = t.data.Dataset.from_tensor_slices((paths, labels, orientations))
            if training and not cache:
                ds = ds.shuffle(len(samples), seed=spec.seed, reshuffle_each_iteration=True)
            # All upright (the usual case): the decoder leaves out the orientation's switch, the same pixels for a
            # quarter less decode CPU on small images (see decode_all).
            upright = bool((orientations == 1).all())
            ds = ds.map(plain(lambda p, y, o: (decode(t.io.read_file(p), size, 1 if upright else o, spec.resize), y)),
                        num_parallel_calls=AUTOTUNE, deterministic=True)
        if cache:
            ds = ds.cache()
            if training:
                ds = ds.shuffle(len(samples), seed=spec.seed, reshuffle_each_iteration=True)
    ds = ds.batch(spec.batch_size).map(plain(lambda x, y: (t.cast(x, t.float32), y)), num_parallel_calls=AUTOTUNE)
    aug = augmentation(spec.augment, spec.seed) if training else None
    if aug is not None:
        ds = ds.map(lambda x, y: (aug(x, training=True), y), num_parallel_calls=AUTOTUNE)
    mix = mixing(spec.num_classes, spec.seed) if training and mixes_labels(spec) else None
    if mix is not None:
        ds = ds.enumerate().map(lambda i, xy: mix(i, *xy), num_parallel_calls=AUTOTUNE)
    ds = without_autotune(ds.prefetch(AUTOTUNE))
    # Their seed state: what a checkpoint saves (random_layers).
    ds.random_layers = ([aug] if aug is not None else []) + (mix.layers if mix is not None else [])
    return ds


def random_layers(ds) -> list:
    """The random layers (augmentation) build() mapped over `ds`, whose seed generators advance every batch."""
    return list(getattr(ds, "random_layers", []))


def preview(samples: list[Sample], spec: PipelineSpec, images: np.ndarray | None = None, n: int = 16) -> np.ndarray:
    """n training images as --augment makes them (uint8), for augment_preview.png: a pipeline of its own over n
    samples spread over the list (so over the classes), so the training batches are not drawn from."""
    picked = np.linspace(0, len(samples) - 1, min(n, len(samples))).round().astype(int)
    ds = build([samples[i] for i in picked], dataclasses.replace(spec, batch_size=len(picked)), training=True,
               images=images[picked] if images is not None and len(images) else None)
    x, _ = next(iter(ds))
    return np.clip(np.round(x.numpy()), 0, 255).astype(np.uint8)


# decode_all's chunks: the header probe of a chunk (Python, in this thread) runs while TensorFlow's threads decode
# the chunk before it (they hold no Python lock), with the whole chunk buffered so they never wait for Python.
# Starting a chunk's pipeline costs this thread about 0.13 s, so chunks start at FIRST_CHUNK files and double, up to
# CHUNK_BYTES of decoded images (and of file bytes): Fashion-MNIST's 60,000 files go in 6 chunks. At most two
# chunks are held at a time.
FIRST_CHUNK = 1024
CHUNK_BYTES = 128 * 1024**2
_BATCH = 64


def decode_all(n: int, item: Callable[[int], tuple[str, int, bytes | None] | None], image_size: int, *, keep: bool,
               stop: Callable[[], bool] = lambda: False, stop_on_error: bool = False,
               progress: Callable[[int, int], None] | None = None,
               resize: Resize = Resize.squash) -> tuple[np.ndarray | None, list[int]]:
    """Decode n files with imagefile.decode in parallel tf.data pipelines (all cores), each file once, in order.

    item(i) -> (path, EXIF orientation, the file's bytes or None to read it here) of file i, or None to leave it
    out: the caller's cheap header probe, which must pass before a file is decoded (it refuses e.g. a
    decompression bomb); stop() is asked after a file is left out and ends the pass. The files go in chunks: the
    probe of one chunk runs while the chunk before it decodes. The decode is given the bytes the probe read, so
    TensorFlow does not read the file again (on Fashion-MNIST's 60,000 PNGs, TensorFlow's read_file was about a
    third of the decode's CPU time).
    Returns (uint8 array (n, size, size, 3) with the decoded images, zeros where a file was left out or failed --
    None without keep; the indices of files that failed to read or decode, in order). A failure only drops its
    element (ignore_errors): the caller asks imagefile for the reason, file by file. progress(done, n) counts
    files handled, in order.
    """
    images = np.zeros((n, image_size, image_size, 3), np.uint8) if keep else None
    largest = max(_BATCH, CHUNK_BYTES // (image_size * image_size * 3))
    chunk = min(FIRST_CHUNK, largest)
    failed: list[int] = []
    running = None  # the chunk being decoded: (its indices, its iterator)
    i, stopped = 0, False
    while True:
        # One pipeline per chunk: a from_generator pipeline fed by the probe left TensorFlow's threads spinning
        # after it finished (measured: the next 2 epochs took 11.1 s wall / 4.7 s system CPU instead of 4.6 / 0.4).
        yielded: list[int] = []
        blobs, orients = [], []
        size = 0
        while i < n and len(yielded) < chunk and size < CHUNK_BYTES and not stopped:
            it = item(i)
            if it is not None:
                path, orientation, contents = it
                if contents is None:
                    contents = _read(path)  # b"" if unreadable: it fails the decode, and the caller asks why
                yielded.append(i)
                blobs.append(contents)
                orients.append(orientation)
                size += len(contents)
            elif stop():
                stopped = True
            i += 1
        # This chunk starts before the one before it is collected, so TensorFlow's threads never wait for Python.
        started = _start(yielded, blobs, orients, image_size, resize) if yielded else None
        if running is not None and not _collect(*running, images, failed, n, progress) and stop_on_error:
            return images, failed
        if started is None:
            break
        running = started
        chunk = min(2 * chunk, largest)
    if progress is not None:
        progress(n, n)
    return images, failed


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _start(indices: list[int], blobs: list[bytes], orients: list[int], image_size: int, resize: Resize):
    """A chunk's decode pipeline, started: TensorFlow's threads go on decoding the whole chunk into the prefetch
    buffer while this thread returns to probing. (tf.data starts its threads at the first request: an empty batch
    put first answers that request at once, so this thread does not wait for a decode.)"""
    t = tf()
    upright = all(o == 1 for o in orients)
    ds = t.data.Dataset.from_tensor_slices((np.array(indices, np.int64), np.array(blobs, dtype=object),
                                            np.array(orients, np.int32)))
    ds = ds.map(_bytes_decoder(image_size, upright, resize), num_parallel_calls=t.data.AUTOTUNE, deterministic=True)
    empty = t.data.Dataset.from_tensors((t.zeros([0], t.int64), t.zeros([0, image_size, image_size, 3], t.uint8)))
    ds = empty.concatenate(ds.ignore_errors().batch(_BATCH))
    iterator = iter(without_autotune(ds.prefetch(1 + -(-len(indices) // _BATCH))))
    next(iterator)  # the empty batch
    return indices, iterator


_DECODERS: dict = {}


def _bytes_decoder(image_size: int, upright: bool, resize: Resize = Resize.squash):
    """(index, bytes, orientation) -> (index, decoded image), traced once per size: a map traces its function for
    every new pipeline, and the decoder's graph takes about half a second to trace. `upright`: every orientation
    is 1, and the decoder leaves out the orientation's switch (the same pixels; it cost a quarter of the decode's
    CPU time on small images)."""
    key = (image_size, upright, Resize(resize))
    if key not in _DECODERS:
        t = tf()
        _DECODERS[key] = t.function(
            lambda i, b, o: (i, decode(b, image_size, 1 if upright else o, resize)), autograph=False,
            input_signature=[t.TensorSpec([], t.int64), t.TensorSpec([], t.string), t.TensorSpec([], t.int32)])
    return _DECODERS[key]


def _collect(indices: list[int], iterator, images, failed: list[int], n: int, progress) -> bool:
    """A started chunk's images into `images`; the indices that failed appended to `failed`. False if any failed."""
    k = 0  # position in `indices`: every index before the next one received has failed
    ok = True
    for idx, x in iterator:
        idx = idx.numpy()
        for r in idx:
            while indices[k] != r:
                failed.append(indices[k])
                ok = False
                k += 1
            k += 1
        if images is not None:
            images[idx] = x.numpy()
        if progress is not None:
            progress(int(idx[-1]) + 1, n)
    if k < len(indices):
        failed.extend(indices[k:])
        ok = False
    return ok


@dataclass
class LoadedBatch:
    paths: list[str]
    images: np.ndarray | None  # (n_ok, size, size, 3) float32 of the readable files, in order
    ok: list[bool]  # one per path
    errors: list[str | None]  # one per path: None or the reason it could not be read
    extra: list[dict] = field(default_factory=list)  # one per path: for a record, where it is stored ({} for a file)


def _load_one(path: str, image_size: int, contents: bytes | None = None, resize: Resize = Resize.squash):
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
        return decode(t.constant(contents), image_size, info.orientation, resize).numpy(), None
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


def iter_batches(paths: Iterable, image_size: int, batch_size: int, workers: int = 4,
                 resize: Resize = Resize.squash) -> Iterator[LoadedBatch]:
    """Decode paths (or records: Samples of a TFRecord folder) in order, batch by batch, in bounded memory, resized
    the `resize` way (the model's); unreadable files are reported, not raised."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        chunk: list = []
        for item in _with_contents(paths):
            chunk.append(item)
            if len(chunk) == batch_size:
                yield _load_chunk(pool, chunk, image_size, resize)
                chunk = []
        if chunk:
            yield _load_chunk(pool, chunk, image_size, resize)


def _load_chunk(pool, chunk: list, image_size: int, resize: Resize = Resize.squash) -> LoadedBatch:
    results = list(pool.map(lambda item: _load_one(item[0], image_size, item[1], resize), chunk))
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
