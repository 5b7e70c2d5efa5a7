"""Which --resize default: squash, crop and pad side by side on real photos (hymenoptera: ants and bees of every
aspect ratio), `imgclass train` defaults otherwise, tested on its val/ folder; the modes alternate within each seed.

    .venv/bin/python bench/resize_modes.py [--data DIR] [--seeds 42,7,1] [-- extra imgclass train options]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import evaluate, imgclass, load_average  # noqa: E402

DATA = next((p for p in (os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets", "hymenoptera_data"),
                         "/work/shared/datasets/hymenoptera_data") if os.path.isdir(p)), "hymenoptera_data")
MODES = ("squash", "crop", "pad")


def main():
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.abspath(DATA))
    ap.add_argument("--seeds", default="42,7,1")
    a = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="bench-resize-")
    print(f"train on {a.data}/train (20% held out), test on val/; options {' '.join(extra) or '(defaults)'}; "
          f"load average {load_average()}", flush=True)
    acc: dict[str, list[float]] = {m: [] for m in MODES}
    for seed in [int(s) for s in a.seeds.split(",")]:
        for mode in MODES:
            out = os.path.join(tmp, f"{mode}-{seed}")
            wall, _ = imgclass("train", os.path.join(a.data, "train"), "--resize", mode, "--seed", str(seed),
                               "--out", out, "--quiet", *extra)
            acc[mode].append(evaluate(out, os.path.join(a.data, "val")))
            print(f"seed {seed} {mode:6}: test accuracy {acc[mode][-1]:.4f} ({wall:.0f}s; load average "
                  f"{load_average()})", flush=True)
    for mode in MODES:
        print(f"{mode:6}: mean {sum(acc[mode]) / len(acc[mode]):.4f} over seeds {a.seeds} "
              f"({', '.join(f'{x:.4f}' for x in acc[mode])})")


if __name__ == "__main__":
    main()
