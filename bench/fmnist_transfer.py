"""Benchmark: transfer on Fashion-MNIST with chained runs, and finetune's --augment default (issue 10, items 5, 6).

Pretrain the default scratch `cnn` (`imgclass train`) on classes 0-4, then on N images per class of classes 5-9
(N = 10 and 50): `finetune --weights RUN` (head only, with --augment none / light x1 view / light x4 views; and
two phases) against scratch training of the same `cnn` on the same images. Test accuracy of each on the first
--test-per-class test images of each of classes 5-9. Needs `apt-get install -y dataset-fashion-mnist`.

    .venv/bin/python bench/fmnist_transfer.py [--pretrain-per-class 1000] [--pretrain-epochs 6] [--sizes 10,50]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import PYTHON, evaluate, imgclass, load_average, run  # noqa: E402

TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "tools", "fashion_mnist_folder.py")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pretrain-per-class", type=int, default=1000)
    ap.add_argument("--pretrain-epochs", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=30, help="epochs on the small sets (finetune phase 1 and scratch)")
    ap.add_argument("--sizes", default="10,50", help="images per class of classes 5-9")
    ap.add_argument("--test-per-class", type=int, default=400)
    ap.add_argument("--seed", default="42")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-transfer-")
    log = os.path.join(tmp, "log.txt")
    pre, test = os.path.join(tmp, "pre"), os.path.join(tmp, "test59")
    run([PYTHON, TOOL, pre, "--classes", "0,1,2,3,4", "--per-class", str(a.pretrain_per_class)])
    run([PYTHON, TOOL, test, "--classes", "5,6,7,8,9", "--per-class", str(a.test_per_class)])
    print(f"default cnn; pretrain on {5 * a.pretrain_per_class} images of classes 0-4 for {a.pretrain_epochs} "
          f"epochs; test: {5 * a.test_per_class} test images of classes 5-9; seed {a.seed}; "
          f"load average {load_average()}", flush=True)
    pretrain = os.path.join(tmp, "pretrain")
    t, _ = imgclass("train", os.path.join(pre, "train"), "--epochs", str(a.pretrain_epochs), "--seed", a.seed,
                    "--out", pretrain, "-q", log=log)
    print(f"pretrain: {t:.0f}s, test accuracy on classes 0-4 {evaluate(pretrain, os.path.join(pre, 'test')):.4f}",
          flush=True)

    epochs = ["--epochs", str(a.epochs)]
    variants = {
        "scratch cnn (train)": ["train", *epochs],
        "finetune RUN, head, --augment none": ["finetune", "--weights", pretrain, *epochs, "--augment", "none"],
        "finetune RUN, head, --augment light, 1 view": ["finetune", "--weights", pretrain, *epochs,
                                                       "--augment", "light", "--aug-views", "1"],
        "finetune RUN, head, --augment light, 4 views": ["finetune", "--weights", pretrain, *epochs,
                                                        "--augment", "light", "--aug-views", "4"],
        "finetune RUN, 2 phases (--unfreeze 6), --augment none": [
            "finetune", "--weights", pretrain, *epochs, "--augment", "none", "--unfreeze", "6",
            "--finetune-epochs", "10"],
    }
    for n in (int(s) for s in a.sizes.split(",")):
        small = os.path.join(tmp, f"small{n}")
        run([PYTHON, TOOL, small, "--classes", "5,6,7,8,9", "--per-class", str(n)])
        results = {}
        for name, args in variants.items():
            out = os.path.join(tmp, f"{n}-{len(results)}")
            t, _ = imgclass(args[0], os.path.join(small, "train"), *args[1:], "--val", "0", "--seed", a.seed,
                            "--out", out, "-q", log=log)
            results[name] = (t, evaluate(out, os.path.join(test, "test")))
            print(f"{n} per class | {name}: test accuracy {results[name][1]:.4f} ({t:.0f}s)", flush=True)
        base = results["scratch cnn (train)"][1]
        best = max(acc for name, (_, acc) in results.items() if name.startswith("finetune"))
        print(f"{n} per class: best finetune {best:.4f} vs scratch {base:.4f} ({best - base:+.4f}); "
              f"load average {load_average()}", flush=True)


if __name__ == "__main__":
    main()
