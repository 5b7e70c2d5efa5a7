"""Benchmark (b): transfer on Fashion-MNIST with chained runs.

Pretrain `train --arch mobilenetv2 --weights none` on classes 0-4, then `finetune --weights RUN` on 50 images
per class of classes 5-9, against scratch training on the same 250 images; test accuracy of each on all the
test images of classes 5-9 (5,000).

    .venv/bin/python bench/fmnist_transfer.py [--pretrain-per-class 1000] [--pretrain-epochs 8] [--size 32]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import PYTHON, evaluate, imgclass, load_average, run  # noqa: E402

TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "tools", "fashion_mnist_folder.py")
NAMES = ["t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pretrain-per-class", type=int, default=1000)
    ap.add_argument("--pretrain-epochs", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=30, help="epochs on the 250 images (finetune phase 1 and scratch)")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--test", default="/tmp/fmnist/test", help="the full Fashion-MNIST test folder")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-b-")
    log = os.path.join(tmp, "log.txt")
    pre, small = os.path.join(tmp, "pre"), os.path.join(tmp, "small")
    run([PYTHON, TOOL, pre, "--classes", "0,1,2,3,4", "--per-class", str(a.pretrain_per_class)])
    run([PYTHON, TOOL, small, "--classes", "5,6,7,8,9", "--per-class", "50"])
    test = os.path.join(tmp, "test59")  # every test image of classes 5-9, by symlink
    os.makedirs(test)
    for name in NAMES[5:]:
        os.symlink(os.path.join(os.path.abspath(a.test), name), os.path.join(test, name))
    size = ["--image-size", str(a.size)]
    print(f"mobilenetv2 at {a.size}px; pretrain on {5 * a.pretrain_per_class} images of classes 0-4 for "
          f"{a.pretrain_epochs} epochs; 250 images of classes 5-9; load average {load_average()}")

    t, _ = imgclass("train", os.path.join(pre, "train"), "--arch", "mobilenetv2", "--weights", "none", *size,
                    "--epochs", str(a.pretrain_epochs), "--out", os.path.join(tmp, "pretrain"), "-q", log=log)
    print(f"pretrain: {t:.0f}s, test accuracy on classes 0-4 {evaluate(os.path.join(tmp, 'pretrain'), os.path.join(pre, 'test')):.4f}")

    common = [os.path.join(small, "train"), *size, "--val-split", "0", "-q"]
    results = {}
    t, _ = imgclass("finetune", *common, "--backbone", "mobilenetv2", "--weights", os.path.join(tmp, "pretrain"),
                    "--epochs", str(a.epochs), "--out", os.path.join(tmp, "ft"), log=log)
    results["finetune --weights RUN (head only, cached)"] = (t, evaluate(os.path.join(tmp, "ft"), test))
    t, _ = imgclass("finetune", *common, "--backbone", "mobilenetv2", "--weights", os.path.join(tmp, "pretrain"),
                    "--epochs", str(a.epochs), "--unfreeze", "30", "--finetune-epochs", "10",
                    "--out", os.path.join(tmp, "ft2"), log=log)
    results["finetune --weights RUN --unfreeze 30 (2 phases)"] = (t, evaluate(os.path.join(tmp, "ft2"), test))
    t, _ = imgclass("train", *common, "--arch", "mobilenetv2", "--weights", "none", "--epochs", str(a.epochs),
                    "--out", os.path.join(tmp, "scratch"), log=log)
    results["scratch mobilenetv2 on the 250 images"] = (t, evaluate(os.path.join(tmp, "scratch"), test))
    t, _ = imgclass("train", *common, "--epochs", str(a.epochs), "--out", os.path.join(tmp, "scratch-cnn"), log=log)
    results["scratch default cnn on the 250 images"] = (t, evaluate(os.path.join(tmp, "scratch-cnn"), test))
    for name, (t, acc) in results.items():
        print(f"{name}: test accuracy on classes 5-9 {acc:.4f} ({t:.0f}s)")
    base = results["scratch mobilenetv2 on the 250 images"][1]
    print(f"transfer gain over scratch mobilenetv2: {results['finetune --weights RUN (head only, cached)'][1] - base:+.4f} "
          f"(head only), {results['finetune --weights RUN --unfreeze 30 (2 phases)'][1] - base:+.4f} (2 phases); "
          f"load average {load_average()}")


if __name__ == "__main__":
    main()
