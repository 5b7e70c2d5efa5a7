"""Benchmark: the cost of looking at every file once (prepare, and the check before fit). Prints files/s of each
step and of the whole check. Not run by CI.

    .venv/bin/python bench/bench_verify.py [FOLDER] [--repeat 3]

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
    args = ap.parse_args()

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


if __name__ == "__main__":
    main()
