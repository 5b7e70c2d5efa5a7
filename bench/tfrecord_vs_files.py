"""Benchmark: the first training epoch's input pipeline reading loose files vs TFRecord shards. Not run by CI.

    .venv/bin/python bench/tfrecord_vs_files.py [--fmnist DIR] [--hymenoptera DIR] [--repeat 2]

Each source folder (read-only) is prepared twice under a temporary folder: as class folders of hardlinks
(`imgclass prepare`) and as TFRecord shards (`imgclass prepare --tfrecord`, default 100 MB shards). Then the
training pipeline `data.pipeline.build` of the train split -- read, decode, resize, the in-memory cache, shuffle,
batch -- is run for one epoch (the first: every image is read and decoded) of each, alternating files and records,
and images/s are printed with the ratio and the load average (the 2-core machine is shared). The model is left out:
it is the same on both sides. Both read from a warm page cache (prepare has just read or written every byte).
The prepared copies are deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench._common import imgclass, load_average  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FMNIST = "/work/fmnist/train"
HYMENOPTERA = os.path.join(HERE, "..", "..", "shared", "datasets", "hymenoptera_data")


def folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)


def first_epoch(prepared: str, image_size: int) -> tuple[int, float]:
    """(images, seconds) of one epoch of the train split's training pipeline."""
    from imgclass_cli.data import dataset, pipeline

    data = dataset.scan(prepared, val_split=0.0, seed=42)
    samples = data.splits["train"]
    spec = pipeline.PipelineSpec(image_size, 64, 42)
    t0 = time.perf_counter()
    n = 0
    for x, _ in pipeline.build(samples, spec, training=True):
        n += int(x.shape[0])
    return n, time.perf_counter() - t0


def bench(name: str, src: str, image_size: int, work: str, repeat: int, split: list[str]) -> None:
    loose, records = os.path.join(work, f"{name}-files"), os.path.join(work, f"{name}-tfrecord")
    t_loose, _ = imgclass("prepare", src, loose, "-q", "--format", "json", *split)
    t_rec, _ = imgclass("prepare", src, records, "--tfrecord", "-q", "--format", "json", *split)
    shards = sorted(f for f in os.listdir(records) if f.endswith(".tfrecord"))
    print(f"\n{name}: {src} at {image_size} px")
    shard_bytes = sum(os.path.getsize(os.path.join(records, f)) for f in shards)
    print(f"  prepare: files {t_loose:.1f}s, --tfrecord {t_rec:.1f}s ({len(shards)} shards, {shard_bytes / 1e6:.1f} MB "
          f"of records; image files {folder_bytes(src) / 1e6:.1f} MB)")
    rates: dict[str, list[float]] = {"files": [], "tfrecord": []}
    for r in range(repeat):
        for kind, folder in (("files", loose), ("tfrecord", records)):
            load = load_average()
            n, s = first_epoch(folder, image_size)
            rates[kind].append(n / s)
            print(f"  run {r + 1} {kind:8s}: {n} images in {s:.2f}s = {n / s:7.0f} images/s  (load average {load})")
    f, t = statistics.median(rates["files"]), statistics.median(rates["tfrecord"])
    print(f"  median first-epoch images/s: files {f:.0f}, tfrecord {t:.0f}; tfrecord / files = {t / f:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fmnist", default=FMNIST)
    ap.add_argument("--hymenoptera", default=HYMENOPTERA)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--only", choices=["fmnist", "hymenoptera"])
    args = ap.parse_args()
    from imgclass_cli import fs
    from imgclass_cli._tf import tf

    tf()  # imported before any clock starts
    work = tempfile.mkdtemp(prefix="imgclass-bench-tfrecord-")
    try:
        if args.only != "fmnist":
            bench("hymenoptera", args.hymenoptera, 224, work, args.repeat, [])
        if args.only != "hymenoptera":
            bench("fmnist", args.fmnist, 28, work, args.repeat, ["--val", "0", "--test", "0"])  # all 60,000 in train
    finally:
        fs.remove_tree(work)


if __name__ == "__main__":
    main()
