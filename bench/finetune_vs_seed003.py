"""Benchmark (a): the seed 003 fine-tuning recipe on today's Keras vs `imgclass finetune`, same backbone/data/size/E.

The seed recipe (ImageDataGenerator is gone from Keras 3): image_dataset_from_directory, flip/zoom/shear
augmentation layers, Rescaling(1/255), a frozen backbone, GAP + softmax, model.fit over the folder for E
epochs: the frozen backbone runs on every image in every epoch. imgclass runs it once (feature cache).
No ImageNet weights offline: both use --weights none (random backbone), which changes accuracy, not the cost.

    .venv/bin/python bench/finetune_vs_seed003.py [--backbone vgg16] [--size 160] [--epochs 5]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import PYTHON, imgclass, load_average, run, timings, timings_text  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets", "hymenoptera_data")

SEED_RECIPE = r'''
import sys, time
t0 = time.time()
import keras
from imgclass_cli.model.backbones import get_backbone
data, name, size, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
keras.utils.set_random_seed(42)
L = keras.layers
kw = dict(image_size=(size, size), batch_size=32, seed=42)
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
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="vgg16")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--data", default=os.path.abspath(DATA))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-a-")
    print(f"data {a.data}; backbone {a.backbone} (random weights: no ImageNet download offline) at {a.size}px; "
          f"E={a.epochs}; load average at start {load_average()}")

    script = os.path.join(tmp, "seed003.py")
    open(script, "w").write(SEED_RECIPE)
    seed_wall, out = run([PYTHON, script, a.data, a.backbone, str(a.size), str(a.epochs)])
    m = re.search(r"SEED fit ([\d.]+)s total ([\d.]+)s val_accuracy ([\d.]+)", out)
    seed_fit, seed_acc = float(m.group(1)), float(m.group(3))
    print(f"seed 003 recipe: wall {seed_wall:.1f}s (model.fit {seed_fit:.1f}s), val accuracy {seed_acc:.3f}")

    ft = os.path.join(tmp, "ft")
    wall, log = imgclass("finetune", a.data, "--backbone", a.backbone, "--weights", "none", "--image-size", str(a.size),
                         "--epochs", str(a.epochs), "--out", ft)
    t = timings(ft)
    cache_s, epoch_s = t["feature_cache"], sum(t["epochs"])
    acc = float(re.search(r"final val_accuracy\s*\S\s*([\d.]+)", log).group(1))
    print(f"imgclass finetune: wall {wall:.1f}s (feature cache {cache_s:.1f}s + {a.epochs} head epochs {epoch_s:.1f}s), "
          f"val accuracy {acc:.3f}")
    print(f"imgclass stages: {timings_text(t)}")
    print(f"ratio wall time seed / imgclass: {seed_wall / wall:.2f}x; phase 1 (fit) seed {seed_fit:.1f}s vs imgclass "
          f"{cache_s + epoch_s:.1f}s: {seed_fit / (cache_s + epoch_s):.1f}x; load average at end {load_average()}")


if __name__ == "__main__":
    main()
