"""Calibration and test-time augmentation on real data (docs/benchmarks.md, "Calibration and test-time
augmentation"): ECE, NLL and Brier before and after the temperature fitted at the end of train, and accuracy and
ECE with and without --tta, with the time each evaluate took (plain and --tta alternating, in one run).

    .venv/bin/python bench/calibration_tta.py [--work DIR] [--rounds 2] [--skip-train]
        [--fmnist /work/fmnist] [--hymenoptera /work/shared/datasets/hymenoptera_data]

Fashion-MNIST: `imgclass train FMNIST/train` with its defaults (60,000 PNGs, 20% held out for validation: the
temperature is fitted on those 12,000), evaluated on FMNIST/test (10,000). Hymenoptera: no ImageNet weights here,
so a scratch run, `imgclass train HYM/train --val 0.25 --augment light` (its val/ folder stays unseen; --augment
light flips, so --tta adds the flip), evaluated on HYM/val (153 photos). The data folders are only read.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import imgclass, load_average  # noqa: E402

KEYS = ("accuracy", "ece", "ece_uncalibrated", "nll", "nll_uncalibrated", "brier", "brier_uncalibrated")


def option(args: list[str], name: str, default: str) -> str:
    return args[args.index(name) + 1] if name in args else default


def train(data: str, out: str, extra: list[str], skip: bool) -> None:
    if skip and os.path.exists(os.path.join(out, "model.keras")):
        print(f"  reusing {out}")
        return
    wall, log = imgclass("train", data, "--out", out, "--force", *extra)
    cal = json.load(open(os.path.join(out, "config.json")))["calibration"]
    print(f"  train {data} {' '.join(extra)}: {wall:.0f}s wall (load average {load_average()}); calibration {cal}")


def evaluate(run: str, data: str, work: str, tta: bool) -> tuple[float, dict]:
    out = os.path.join(work, "eval-tta" if tta else "eval", "metrics.json")
    t0 = time.time()
    imgclass("evaluate", run, data, "--out", out, "-q", "-f", "json", *(["--tta"] if tta else []))
    return time.time() - t0, json.load(open(out))


def compare(name: str, run: str, data: str, work: str, rounds: int) -> None:
    times = {False: [], True: []}
    report = {}
    for _ in range(rounds):  # plain and --tta alternating: the same machine state for both
        for tta in (False, True):
            seconds, report[tta] = evaluate(run, data, work, tta)
            times[tta].append(seconds)
    t = report[False]["calibration"]["temperature"]
    print(f"{name}: {report[False]['num_samples']} images, temperature {t:.4f}")
    for tta in (False, True):
        r = report[tta]
        views = len(r["tta"]) if r["tta"] else 1
        figures = ", ".join(f"{k} {r[k]:.4f}" for k in KEYS)
        print(f"  {'--tta (' + str(views) + ' views)' if tta else 'plain':>16}: {figures}; evaluate "
              f"{min(times[tta]):.1f}s (best of {rounds})")
    plain, aug = report[False], report[True]
    print(f"  --tta minus plain: accuracy {aug['accuracy'] - plain['accuracy']:+.4f}, ece {aug['ece'] - plain['ece']:+.4f}, "
          f"nll {aug['nll'] - plain['nll']:+.4f}; time ratio {min(times[True]) / min(times[False]):.2f}")


def main():
    args = sys.argv[1:]
    work = option(args, "--work", "/tmp/bench-calibration")
    rounds = int(option(args, "--rounds", "2"))
    fmnist = option(args, "--fmnist", "/work/fmnist")
    hym = option(args, "--hymenoptera", "/work/shared/datasets/hymenoptera_data")
    skip = "--skip-train" in args
    os.makedirs(work, exist_ok=True)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, load average at start {load_average()} (2-core machine, shared)")
    runs = {
        "Fashion-MNIST test": (os.path.join(fmnist, "train"), os.path.join(work, "fmnist-run"), [],
                               os.path.join(fmnist, "test")),
        "hymenoptera val": (os.path.join(hym, "train"), os.path.join(work, "hymenoptera-run"),
                            ["--val", "0.25", "--augment", "light"], os.path.join(hym, "val")),
    }
    for name, (data, out, extra, test) in runs.items():
        train(data, out, extra, skip)
        compare(name, out, test, work, rounds)
    print(f"load average at the end {load_average()}")


if __name__ == "__main__":
    main()
