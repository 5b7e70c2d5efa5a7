"""Benchmark: the cost of looking at every file once (prepare, and the check before fit). Prints files/s of each
step and of the whole check. Not run by CI.

    .venv/bin/python bench/bench_verify.py [FOLDER] [--repeat 3]
    .venv/bin/python bench/bench_verify.py FOLDER --fused 28     # the check before fit, old vs fused (issue 12)
    .venv/bin/python bench/bench_verify.py FOLDER --fused 28 --skip-old   # without the slow per-file check

FOLDER defaults to ../shared/datasets/hymenoptera_data (398 real photos, median 500x375). Steps: the Pillow header
probe (size, EXIF orientation), sha256, the TensorFlow decode (imagefile.decode, one thread), and
verify.check_files (all of it, in threads). TensorFlow is imported and warmed up before any clock starts.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "datasets", "hymenoptera_data")


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?", default=DEFAULT)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--fused", type=int, metavar="SIZE", help="compare the check + first epoch's decoding at SIZE px: "
                    "today's per-file check then a decoding first epoch, against the fused check (one parallel pass "
                    "that keeps the images) then a first epoch from memory, against a plain first epoch")
    ap.add_argument("--skip-old", action="store_true", help="with --fused: leave out the per-file check (minutes)")
    args = ap.parse_args()
    if args.fused:
        return fused(args.folder, args.fused, args.skip_old)

    from imgclass_cli._tf import tf
    from imgclass_cli.data import dataset, imagefile, verify

    tf()
    paths = [s.path for split in dataset.scan(args.folder, val_split=0, seed=0).splits.values() for s in split]
    blobs = {p: open(p, "rb").read() for p in paths}
    verify.check_file(paths[0])  # warm-up: the first TF call builds its kernels
    n = len(paths)
    mb = sum(len(b) for b in blobs.values()) / 1e6
    print(f"{n} files, {mb:.1f} MB, {os.cpu_count()} CPUs")
    steps = {
        "header probe (Pillow)": lambda: [imagefile.probe_bytes(blobs[p], p) for p in paths],
        "sha256": lambda: [hashlib.sha256(blobs[p]).hexdigest() for p in paths],
        "decode (imagefile.decode, 1 thread)": lambda: [imagefile.decode_error(blobs[p]) for p in paths],
        "check_files (read+probe+hash+decode, threads)": lambda: verify.check_files(paths),
    }
    for name, fn in steps.items():
        s = best(fn, args.repeat)
        print(f"{name:48s} {n / s:8.0f} files/s  ({s:.2f} s)")


def fused(folder: str, size: int, skip_old: bool = False) -> None:
    """Each side once (a second pass would read the files from the page cache like the first: they are read
    once before any clock starts). The model's work is left out: only the input side of the first epoch."""
    from imgclass_cli._tf import tf
    from imgclass_cli.data import dataset, pipeline, verify

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import load_average

    tf()
    data = dataset.scan(folder, val_split=0.2, seed=42)
    samples = [s for split in data.splits.values() for s in split]
    for s in samples:
        open(s.path, "rb").read()  # into the page cache for every side alike
    n = len(samples)
    spec = pipeline.PipelineSpec(size, 64, 42)
    print(f"{n} files at {size}px, {os.cpu_count()} CPUs, load average {load_average()}")

    def epoch(images=None):
        for _ in pipeline.build(samples, spec, training=True, images=images):
            pass

    t = time.perf_counter()
    epoch()
    plain = time.perf_counter() - t
    old_check = old = None
    if not skip_old:
        t = time.perf_counter()
        verify.check_files([s.path for s in samples], digest=False)
        old_check = time.perf_counter() - t
        old = old_check + plain  # today's first epoch decodes everything again: the plain epoch
    t = time.perf_counter()
    verify.screen(data, "skip", lambda m: None, image_size=size)
    new_check = time.perf_counter() - t
    t = time.perf_counter()
    for split in data.splits:
        for _ in pipeline.build(data.splits[split], spec, training=True, images=data.images[split]):
            pass
    new_epoch = time.perf_counter() - t
    new = new_check + new_epoch
    print(f"{'plain first epoch (decode + cache)':44s} {n / plain:8.0f} images/s ({plain:.1f} s)")
    if old is not None:
        print(f"{'per-file check':44s} {n / old_check:8.0f} images/s ({old_check:.1f} s)")
        print(f"{'per-file check + first epoch':44s} {n / old:8.0f} images/s ({old:.1f} s) = {old / plain:.2f}x plain")
    print(f"{'fused check (keeps the images)':44s} {n / new_check:8.0f} images/s ({new_check:.1f} s)")
    print(f"{'fused check + first epoch from memory':44s} {n / new:8.0f} images/s ({new:.1f} s) = {new / plain:.2f}x "
          f"plain;{f' {old / new:.1f}x faster than the per-file check;' if old else ''} load average {load_average()}")


if __name__ == "__main__":
    main()
