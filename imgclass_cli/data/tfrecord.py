"""TFRecord prepared folders (`prepare --tfrecord`): the shard files, their records, and reading them back.

Every access to such a folder (its manifest, listing, the shards) goes through tf.io.gfile or TensorFlow's own
readers when its path is a URL (gs://, s3://, ram://, ...), so a folder copied to a bucket is read without code
changes. Records of a split are dealt to its N shards round-robin in manifest order (record i is record i // N of
shard i mod N); reading the shards with a deterministic interleave (cycle N, block 1) gives them back in manifest
order, so a run on the TFRecord folder sees the same samples in the same order as on the loose prepared folder.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from imgclass_cli._tf import tf
from imgclass_cli.data.imagefile import clean_tf_message, decode_error, probe_bytes
from imgclass_cli.errors import ImgclassError, first_line

SHARD_PATTERN = re.compile(r"(train|val|test)-(\d{5})-of-(\d{5})\.tfrecord")
# Manifest columns a TFRecord folder adds: where each image's record is, and the size of the stored image.
COLUMNS = ["shard", "record", "stored_width", "stored_height"]
# Feature keys: the common image/* names (readable by other tools) plus imgclass's own.
ENCODED, FORMAT, LABEL, CLASS = "image/encoded", "image/format", "image/class/label", "image/class/text"
FILENAME, WIDTH, HEIGHT = "image/filename", "image/width", "image/height"
PATH, INDEX, ORIENTATION = "imgclass/path", "imgclass/index", "imgclass/orientation"
PARALLEL_READS = 16  # shards read at once when streaming shuffled training data


# --- paths: local or any file system TensorFlow has a plugin for ------------------------------------------------

def is_url(path: str) -> bool:
    return "://" in str(path)


def absolute(path: str) -> str:
    """os.path.abspath, except that a URL (gs://bucket/x) is already absolute and must keep its double slash."""
    return str(path) if is_url(path) else os.path.abspath(path)


def exists(path: str) -> bool:
    return tf().io.gfile.exists(path) if is_url(path) else os.path.exists(path)


def isdir(path: str) -> bool:
    return tf().io.gfile.isdir(path) if is_url(path) else os.path.isdir(path)


def read_text(path: str) -> str:
    """A text file's content (OSError when it cannot be read, whatever the file system)."""
    if not is_url(path):
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    t = tf()
    try:
        with t.io.gfile.GFile(path, "rb") as f:
            data = f.read()
    except t.errors.OpError as e:
        raise OSError(first_line(getattr(e, "message", e))) from None
    return data.decode("utf-8")


# --- writing ---------------------------------------------------------------------------------------------------

def shard_name(split: str, k: int, n: int) -> str:
    return f"{split}-{k:05d}-of-{n:05d}.tfrecord"


def shard_count(total_bytes: int, records: int, shard_size: int) -> int:
    """Shards of about shard_size bytes each, never more than there are records."""
    return max(1, min(records, math.ceil(total_bytes / shard_size))) if records else 0


@dataclass
class Record:
    """One image to store: its bytes come from `file` (the source, or a downscaled copy)."""

    file: str
    label: int
    cls: str
    source: str  # relative to SRC, as manifest.csv's source column
    path: str  # its name inside the prepared folder (manifest.csv's path column)
    orientation: int


def example(contents: bytes, r: Record, index: int) -> tuple[bytes, int, int]:
    """(serialized tf.train.Example, stored width, stored height) of one image."""
    t = tf()
    info = probe_bytes(contents, r.file)
    if not info.ok:  # prepare checked the file: it changed under us since
        raise ImgclassError(f"{r.file}: {info.reason} (it changed while prepare was writing records)")

    def b(v: bytes):
        return t.train.Feature(bytes_list=t.train.BytesList(value=[v]))

    def i(v: int):
        return t.train.Feature(int64_list=t.train.Int64List(value=[v]))

    features = {
        ENCODED: b(contents), FORMAT: b(info.format.encode()), LABEL: i(r.label), CLASS: b(r.cls.encode()),
        FILENAME: b(r.source.encode("utf-8", "surrogateescape")), PATH: b(r.path.encode("utf-8", "surrogateescape")),
        WIDTH: i(info.width), HEIGHT: i(info.height), INDEX: i(index), ORIENTATION: i(r.orientation),
    }
    ex = t.train.Example(features=t.train.Features(feature=features))
    return ex.SerializeToString(), info.width, info.height


def write_split(folder: str, split: str, records: list[Record], shard_size: int) -> list[dict]:
    """Write a split's records into ~shard_size shards in `folder` (local); one dict of manifest columns per record.

    A failed write (a full disk) is an OSError, so fs.staged reports it like any other write of prepare."""
    t = tf()
    total = sum(os.path.getsize(r.file) for r in records)
    n = shard_count(total, len(records), shard_size)
    names = [shard_name(split, k, n) for k in range(n)]
    writers = [t.io.TFRecordWriter(os.path.join(folder, name)) for name in names]
    placed = []
    try:
        for index, r in enumerate(records):
            with open(r.file, "rb") as f:
                contents = f.read()
            data, w, h = example(contents, r, index)
            writers[index % n].write(data)
            placed.append({"shard": names[index % n], "record": index // n, "stored_width": w, "stored_height": h})
    except t.errors.OpError as e:
        raise OSError(f"writing {split} shards: {first_line(getattr(e, 'message', e))}") from None
    finally:
        for w in writers:
            w.close()
    return placed


# --- reading ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RecordRef:
    """Where a Sample's image is stored: record `record` of `shard` (a full path), position `index` in its split."""

    shard: str
    record: int
    index: int
    source: str  # the source file as recorded by prepare (the SRC it read, joined with manifest.csv's source)
    size: int  # longer side of the stored image

    @property
    def group(self) -> tuple[str, str]:
        """(folder, split): the shards read together."""
        return os.path.dirname(self.shard), SHARD_PATTERN.fullmatch(os.path.basename(self.shard)).group(1)

    def where(self) -> str:
        return f"{self.shard}, record {self.record} (source {self.source})"


def ref_from_row(root: str, row: dict, where: str, source: str, shards_seen: dict[str, bool],
                 rows: int | None = None) -> RecordRef:
    """The RecordRef of a manifest row of a TFRecord folder, validated: the shard is a shard file name of the
    row's split inside the folder (no path), the record number is consistent with the round-robin layout and
    (`rows`: the manifest's rows) below the number of records the folder holds, which sizes the reader's tables."""
    name = row.get("shard") or ""
    m = SHARD_PATTERN.fullmatch(name)
    if not m or m.group(1) != row["split"]:
        raise ImgclassError(f"{where}, field shard: {name!r:.80} is not a {row['split']} shard file name "
                            f"({row['split']}-NNNNN-of-NNNNN.tfrecord)")
    k, n = int(m.group(2)), int(m.group(3))
    try:
        record, w, h = (int(row.get(k) or "") for k in ("record", "stored_width", "stored_height"))
    except ValueError:
        raise ImgclassError(f"{where}: fields record, stored_width and stored_height must be whole numbers") from None
    if k >= n or record < 0 or w < 1 or h < 1 or (rows is not None and record * n + k >= rows):
        raise ImgclassError(f"{where}: shard {name} or record {record} out of range")
    shard = os.path.join(root, name)
    if name not in shards_seen:
        shards_seen[name] = exists(shard)
    if not shards_seen[name]:
        raise ImgclassError(f"{shard}: listed in manifest.csv but missing; run imgclass prepare --tfrecord again")
    return RecordRef(shard, record, record * n + k, source, max(w, h))


def _groups(samples: list) -> list[tuple[list[str], list]]:
    """Samples grouped by (folder, split), each group's shard files in name order; samples must come in record order."""
    groups: dict[tuple[str, str], list] = {}
    for s in samples:
        groups.setdefault(s.record.group, []).append(s)
    out = []
    for members in groups.values():
        idx = [s.record.index for s in members]
        if any(b <= a for a, b in zip(idx, idx[1:])):
            raise ValueError("TFRecord samples must come in record order (manifest order)")
        out.append((sorted({s.record.shard for s in members}), members))
    return out


PARSE_BATCH = 256  # records parsed per call: tf.io.parse_example on a batch costs far less than one call per record


def _parse(serialized):
    t = tf()
    f = t.io.parse_example(serialized, {ENCODED: t.io.FixedLenFeature([], t.string),
                                        INDEX: t.io.FixedLenFeature([], t.int64)})
    return f[ENCODED], f[INDEX]


def encoded(samples: list, *, shuffle_seed: int | None = None):
    """A tf.data.Dataset of (encoded image bytes, label, orientation, group, index) for `samples`.

    Without shuffle_seed: in the samples' (record) order, every shard of a split read in parallel. With it
    (training data too large for the in-memory cache): shards in a seeded order each epoch, PARALLEL_READS at a time,
    through a shuffle buffer of about two shards of records.
    """
    t = tf()
    parts = []
    for g, (files, members) in enumerate(_groups(samples)):
        size = members[-1].record.index + 1
        keep = np.zeros(size, bool)
        labels = np.zeros(size, np.int32)
        orientations = np.ones(size, np.int32)
        for s in members:
            keep[s.record.index], labels[s.record.index], orientations[s.record.index] = True, s.label, s.orientation
        keep_t, labels_t, orient_t = t.constant(keep), t.constant(labels), t.constant(orientations)
        ds = t.data.Dataset.from_tensor_slices(files)
        cycle = len(files)
        if shuffle_seed is not None:
            ds = ds.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=True)
            cycle = min(cycle, PARALLEL_READS)
        ds = ds.interleave(t.data.TFRecordDataset, cycle_length=cycle, block_length=1,
                           num_parallel_calls=t.data.AUTOTUNE, deterministic=True)

        def select(serialized, keep_t=keep_t, labels_t=labels_t, orient_t=orient_t, size=size, g=g):
            """A batch of records -> the wanted ones with their labels and orientations (vectorized)."""
            contents, i = _parse(serialized)
            at = t.clip_by_value(i, 0, size - 1)
            mask = t.logical_and(i < size, t.gather(keep_t, at))
            contents, i, at = t.boolean_mask(contents, mask), t.boolean_mask(i, mask), t.boolean_mask(at, mask)
            return contents, t.gather(labels_t, at), t.gather(orient_t, at), t.fill(t.shape(i), g), i

        ds = ds.batch(PARSE_BATCH).map(select, num_parallel_calls=t.data.AUTOTUNE, deterministic=True).unbatch()
        # A known length, as the loose files' pipeline has (Keras handles a dataset of unknown length differently:
        # measured, validation was not rerun after the first epoch); a shard with missing records fails here.
        ds = ds.apply(t.data.experimental.assert_cardinality(len(members)))
        parts.append(ds)
        if shuffle_seed is not None:
            per_shard = -(-len(members) // len(files))
            parts[-1] = ds.shuffle(min(len(members), max(1024, 2 * per_shard)), seed=shuffle_seed,
                                   reshuffle_each_iteration=True)
    ds = parts[0]
    for p in parts[1:]:
        ds = ds.concatenate(p)
    return ds


def iter_contents(samples: list) -> Iterator[tuple[object, bytes]]:
    """(sample, encoded bytes) in record order; a corrupt shard is one ImgclassError naming it."""
    if not samples:
        return
    t = tf()
    by_key = {(g, s.record.index): s for g, (_, members) in enumerate(_groups(samples)) for s in members}
    try:
        for contents, _, _, g, i in encoded(samples).as_numpy_iterator():
            yield by_key[(int(g), int(i))], contents
    except t.errors.OpError as e:
        raise ImgclassError(read_error(e, samples)) from None


def read_error(e, samples: list) -> str:
    """What a failed read of TFRecord samples means, naming the shard and the record's source (found by reading
    the records again one by one: only after a failure)."""
    t = tf()
    for files, members in _groups(samples):
        for f in files:
            count = 0
            try:
                for _ in t.data.TFRecordDataset(f):
                    count += 1
            except t.errors.OpError as err:
                return (f"{f}: {clean_tf_message(getattr(err, 'message', str(err)))} (a damaged shard: TFRecord checksums "
                        "do not match); copy it again or run imgclass prepare --tfrecord again")
            listed = [s.record.record for s in members if s.record.shard == f]
            if listed and count <= max(listed):
                return (f"{f}: holds {count} records, but manifest.csv lists record {max(listed)} in it (a truncated "
                        "shard?); copy it again or run imgclass prepare --tfrecord again")
    by_key = {(g, s.record.index): s for g, (_, members) in enumerate(_groups(samples)) for s in members}
    try:
        for contents, _, orientation, g, i in encoded(samples).as_numpy_iterator():
            s = by_key[(int(g), int(i))]
            info = probe_bytes(contents, s.record.source)
            reason = info.reason if not info.ok else decode_error(contents, int(orientation))
            if reason:
                return f"{s.record.where()}: {reason}"
    except t.errors.OpError:
        pass
    return clean_tf_message(getattr(e, "message", str(e)))


def samples_in_order(samples: Iterable) -> list:
    """Record samples sorted into record order (a train/val split made at train time is sorted by label and path)."""
    samples = list(samples)
    groups = {s.record.group: n for n, s in reversed(list(enumerate(samples)))}
    return sorted(samples, key=lambda s: (groups[s.record.group], s.record.index))
