"""Benchmark (c): Fashion-MNIST from folders, the default `imgclass train` vs the seed 000 recipe.

Seed 000: image_dataset_from_directory at --seed-size px (28; PNGs decoded again every epoch), Rescaling, three
unpadded conv/pool blocks (32, 64, 128), Flatten, Dense 128, Dropout 0.5, Adam, 10 epochs, 20% validation.
imgclass: `imgclass train OUT/train` with its defaults, then `imgclass evaluate RUN OUT/test`.

    sudo apt-get install -y dataset-fashion-mnist
    python3 ../shared/tools/fashion_mnist_folder.py /tmp/fmnist
    .venv/bin/python bench/fmnist_scratch_vs_seed000.py /tmp/fmnist [--skip-seed] [--skip-imgclass] [--seed-size N]
        [--test SPLIT] [--rounds N] [-- extra imgclass train options]

With --rounds N the two sides alternate N times (seed, imgclass, seed, ...); the ratio is of the fastest of each.

The same comparison on photos (a faster default must not do worse there), tested on hymenoptera's val/ folder:

    .venv/bin/python bench/fmnist_scratch_vs_seed000.py ../shared/datasets/hymenoptera_data --test val --seed-size 128
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import PYTHON, evaluate, imgclass, load_average, run, timings, timings_text  # noqa: E402

SEED_RECIPE = r'''
import sys, time
t0 = time.time()
import keras
data, epochs, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
keras.utils.set_random_seed(42)
L = keras.layers
kw = dict(image_size=(size, size), batch_size=32, seed=42, validation_split=0.2)
train = keras.utils.image_dataset_from_directory(data + "/train", subset="training", **kw)
val = keras.utils.image_dataset_from_directory(data + "/train", subset="validation", **kw)
test = keras.utils.image_dataset_from_directory(data + "/" + sys.argv[4], image_size=(size, size), batch_size=256,
                                                shuffle=False)
model = keras.Sequential([keras.Input((size, size, 3)), L.Rescaling(1.0 / 255)]
                         + [l for f in (32, 64, 128) for l in (L.Conv2D(f, 3, activation="relu"), L.MaxPooling2D())]
                         + [L.Flatten(), L.Dense(128, activation="relu"), L.Dropout(0.5), L.Dense(len(train.class_names), activation="softmax")])
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(train, validation_data=val, epochs=epochs, verbose=0)
t1 = time.time()
acc = model.evaluate(test, verbose=0)[1]
print(f"SEED train {t1 - t0:.1f}s test_accuracy {acc:.4f}")
'''


def main():
    args = sys.argv[1:]
    extra = args[args.index("--") + 1:] if "--" in args else []
    args = args[:args.index("--")] if "--" in args else args
    seed_size = args[args.index("--seed-size") + 1] if "--seed-size" in args else "28"
    test = args[args.index("--test") + 1] if "--test" in args else "test"
    rounds = int(args[args.index("--rounds") + 1]) if "--rounds" in args else 1
    data = args[0] if args and not args[0].startswith("--") else "/tmp/fmnist"
    tmp = tempfile.mkdtemp(prefix="bench-c-")
    print(f"class folders {data}: train on train/ (20% held out for validation), test on {test}/; "
          f"load average at start {load_average()}", flush=True)
    script = os.path.join(tmp, "seed000.py")
    open(script, "w").write(SEED_RECIPE)
    seeds, ours = [], []
    for r in range(rounds):
        if "--skip-seed" not in args:
            _, out = run([PYTHON, script, data, "10", seed_size, test])
            m = re.search(r"SEED train ([\d.]+)s test_accuracy ([\d.]+)", out)
            seeds.append((float(m.group(1)), float(m.group(2))))
            print(f"round {r + 1}: seed 000 recipe (simple-cnn, {seed_size}px, 10 epochs): test accuracy "
                  f"{seeds[-1][1]:.4f}, {seeds[-1][0]:.0f}s (load average {load_average()})", flush=True)
        if "--skip-imgclass" in args:
            continue
        run_dir = os.path.join(tmp, f"run{r}")
        wall, log = imgclass("train", os.path.join(data, "train"), "--out", run_dir, *extra,
                             log=os.path.join(tmp, "imgclass.log"))
        acc = evaluate(run_dir, os.path.join(data, test))
        ours.append((wall, acc))
        size = re.search(r"at (\d+)px", log).group(1)
        line = re.search(r"^precision .*$", log, re.M)
        print(f"round {r + 1}: imgclass train (defaults{' ' + ' '.join(extra) if extra else ''}; {size}px): test "
              f"accuracy {acc:.4f}, {wall:.0f}s wall for train (load average {load_average()}); "
              f"{line.group(0) if line else ''}; log {tmp}/imgclass.log", flush=True)
        print(f"  imgclass stages: {timings_text(timings(run_dir))}", flush=True)
    if seeds and ours:
        s_best, o_best = min(seeds), min(ours)
        print(f"fastest of {rounds}: seed {s_best[0]:.0f}s ({s_best[1]:.4f}), imgclass {o_best[0]:.0f}s "
              f"({o_best[1]:.4f}); accuracy +{o_best[1] - s_best[1]:.4f}; time ratio imgclass/seed "
              f"{o_best[0] / s_best[0]:.2f}")


if __name__ == "__main__":
    main()
