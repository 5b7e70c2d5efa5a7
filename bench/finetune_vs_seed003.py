"""Benchmark (a): the seed 003 fine-tuning recipe on today's Keras vs `imgclass finetune`, same backbone/data/size/E.

The seed recipe (ImageDataGenerator is gone from Keras 3): image_dataset_from_directory, flip/zoom/shear
augmentation layers, Rescaling(1/255), a frozen backbone, GAP + softmax, model.fit over the folder for E
epochs: the frozen backbone runs on every image in every epoch. imgclass runs it once (feature cache).
No ImageNet weights offline: both use --weights none (random backbone), which changes accuracy, not the cost.
The two sides alternate, one round per seed (--seeds): the time is the fastest round of each side, the accuracy
the mean over the seeds. Extra imgclass options after `--` (e.g. `-- --precision float32`).

    .venv/bin/python bench/finetune_vs_seed003.py [--backbone vgg16] [--size 160] [--epochs 5] [--seeds 42,7,1]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import PYTHON, imgclass, load_average, run, timings, timings_text  # noqa: E402

# ../shared beside the repository, or the machine's /work/shared (a worktree sits one level deeper)
DATA = next((p for p in (os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets", "hymenoptera_data"),
                         "/work/shared/datasets/hymenoptera_data") if os.path.isdir(p)), "hymenoptera_data")

SEED_RECIPE = r'''
import sys, time
t0 = time.time()
import keras
from imgclass_cli.model.backbones import get_backbone
data, name, size, epochs, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
keras.utils.set_random_seed(seed)
L = keras.layers
kw = dict(image_size=(size, size), batch_size=32, seed=seed)
train = keras.utils.image_dataset_from_directory(data + "/train", shuffle=True, **kw)
val = keras.utils.image_dataset_from_directory(data + "/val", shuffle=False, **kw)
base = get_backbone(name).build(size, None)
base.trainable = False
model = keras.Sequential([
    keras.Input((size, size, 3)),
    L.RandomFlip("horizontal"), L.RandomZoom(0.2), L.RandomShear(x_factor=0.2, y_factor=0.2),
    L.Rescaling(1.0 / 255),
    base,
    L.GlobalAveragePooling2D(),
    L.Dense(2, activation="softmax"),
])
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
t1 = time.time()
h = model.fit(train, validation_data=val, epochs=epochs, verbose=0)
print(f"SEED fit {time.time() - t1:.1f}s total {time.time() - t0:.1f}s val_accuracy {h.history['val_accuracy'][-1]:.4f}")
'''


def main():
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="vgg16")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seeds", default="42,7,1")
    ap.add_argument("--skip-seed", action="store_true", help="only the imgclass side")
    ap.add_argument("--data", default=os.path.abspath(DATA))
    a = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="bench-a-")
    print(f"data {a.data}; backbone {a.backbone} (random weights: no ImageNet download offline) at {a.size}px; "
          f"E={a.epochs}; imgclass options {' '.join(extra) or '(defaults)'}; load average at start {load_average()}",
          flush=True)
    script = os.path.join(tmp, "seed003.py")
    open(script, "w").write(SEED_RECIPE)
    seed_runs, ours = [], []
    for seed in [int(x) for x in a.seeds.split(",")]:
        if not a.skip_seed:
            wall, out = run([PYTHON, script, a.data, a.backbone, str(a.size), str(a.epochs), str(seed)])
            m = re.search(r"SEED fit ([\d.]+)s total ([\d.]+)s val_accuracy ([\d.]+)", out)
            seed_runs.append((wall, float(m.group(1)), float(m.group(3))))
            print(f"seed {seed}: seed 003 recipe: wall {wall:.1f}s (model.fit {seed_runs[-1][1]:.1f}s), val accuracy "
                  f"{seed_runs[-1][2]:.3f} (load average {load_average()})", flush=True)
        ft = os.path.join(tmp, f"ft{seed}")
        wall, log = imgclass("finetune", a.data, "--backbone", a.backbone, "--weights", "none", "--image-size",
                             str(a.size), "--epochs", str(a.epochs), "--seed", str(seed), "--out", ft, *extra)
        t = timings(ft)
        acc = float(re.search(r"final val_accuracy\s*\S\s*([\d.]+)", log).group(1))
        line = re.search(r"^precision .*$", log, re.M)
        ours.append((wall, t["feature_cache"] + sum(t["epochs"]), acc))
        print(f"seed {seed}: imgclass finetune: wall {wall:.1f}s (feature cache {t['feature_cache']:.1f}s + "
              f"{a.epochs} head epochs {sum(t['epochs']):.1f}s), val accuracy {acc:.3f}; {line.group(0) if line else ''}"
              f" (load average {load_average()})", flush=True)
        print(f"  imgclass stages: {timings_text(t)}", flush=True)
    best = min(w for w, _, _ in ours)
    mean = sum(acc for _, _, acc in ours) / len(ours)
    print(f"imgclass: fastest wall {best:.1f}s of {[round(w, 1) for w, _, _ in ours]}; mean val accuracy {mean:.3f}")
    if seed_runs:
        seed_best = min(w for w, _, _ in seed_runs)
        seed_mean = sum(acc for _, _, acc in seed_runs) / len(seed_runs)
        print(f"seed 003: fastest wall {seed_best:.1f}s of {[round(w, 1) for w, _, _ in seed_runs]}; mean val "
              f"accuracy {seed_mean:.3f}")
        print(f"ratio of the fastest walls seed / imgclass: {seed_best / best:.2f}x; val accuracy imgclass - seed "
              f"{mean - seed_mean:+.3f}; load average at end {load_average()}")


if __name__ == "__main__":
    main()
