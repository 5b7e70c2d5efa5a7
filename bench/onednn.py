"""Benchmark: TensorFlow's oneDNN kernels off (TensorFlow's default on CPUs without AVX-512) vs on (imgclass's).

Each side runs in its own process (the setting is read when TensorFlow loads), in turn, on the same random data:
  - train: steps of the default scratch `cnn` at 28 px with train's optimizer and loss (a Fashion-MNIST epoch is
    750 such steps at batch 64);
  - forward: images/s of a frozen backbone's inference pass (what finetune's feature cache and predict run),
    VGG16 at 160 px by default, weights=None (same speed as ImageNet weights).

    .venv/bin/python bench/onednn.py [--steps 150] [--backbone vgg16] [--size 160] [--images 256] [--rounds 2]

Prints wall and CPU time per step for each side and the ratios; sides alternate for --rounds rounds, because this
machine's speed drifts over minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r'''
import json, sys, time
import numpy as np
from imgclass_cli._tf import keras, tf
from imgclass_cli.config import AUTO_BATCH, TrainConfig
from imgclass_cli.model import build
from imgclass_cli.run.inference import predict_probs
from imgclass_cli.run.training import make_loss, make_optimizer

steps, backbone, size, n_images = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tf().config.experimental.enable_op_determinism()
keras().utils.set_random_seed(0)
rng = np.random.default_rng(0)
result = {}

# train: the default scratch cnn, as `imgclass train` compiles it
c = TrainConfig.defaults("train")
batch = max(AUTO_BATCH)  # the default batch of a large set (Fashion-MNIST)
model = build.build_classifier("cnn", 10, 28, dropout=c.dropout)
model.compile(optimizer=make_optimizer(c, c.learning_rate, 750, 5), loss=make_loss(c, 10))
x = rng.integers(0, 256, (batch * 20, 28, 28, 3)).astype("float32")
y = rng.integers(0, 10, len(x)).astype("int32")
ds = tf().data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch).prefetch(4)
model.fit(ds, steps_per_epoch=20, epochs=1, verbose=0)  # trace and warm up
t, cpu = time.time(), time.process_time()
model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
result["train"] = {"wall_ms": 1000 * (time.time() - t) / steps, "cpu_ms": 1000 * (time.process_time() - cpu) / steps}

# forward: a frozen backbone's inference pass
model = build.build_classifier(backbone, 2, size, weights="none", trainable_backbone=False)
x = rng.integers(0, 256, (n_images, size, size, 3)).astype("float32")
batches = tf().data.Dataset.from_tensor_slices((x, np.zeros(len(x), "int32"))).batch(32)
predict_probs(model, batches.take(1))  # trace
t, cpu = time.time(), time.process_time()
predict_probs(model, batches)
result["forward"] = {"images_s": n_images / (time.time() - t), "cpu_ms_per_image": 1000 * (time.process_time() - cpu) / n_images}
print("RESULT " + json.dumps(result))
'''


def side(onednn: str, args) -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_ENABLE_ONEDNN_OPTS": onednn, "TF_CPP_MIN_LOG_LEVEL": "3"}
    p = subprocess.run([sys.executable, "-c", CHILD, str(args.steps), args.backbone, str(args.size), str(args.images)],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if p.returncode != 0 or line is None:
        raise SystemExit(f"the oneDNN={onednn} side failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--backbone", default="vgg16")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    load = open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?"
    print(f"load average at start {load}; cnn train steps at 28 px, batch 64; {args.backbone} forward at {args.size} px")
    runs = {"0": [], "1": []}
    for r in range(args.rounds):
        for onednn in ("0", "1"):
            res = side(onednn, args)
            runs[onednn].append(res)
            tr, fw = res["train"], res["forward"]
            print(f"round {r + 1} oneDNN {'on ' if onednn == '1' else 'off'}: train {tr['wall_ms']:6.1f} ms/step wall, "
                  f"{tr['cpu_ms']:6.1f} CPU-ms/step; {args.backbone} forward {fw['images_s']:6.1f} images/s, "
                  f"{fw['cpu_ms_per_image']:6.1f} CPU-ms/image", flush=True)

    def best(onednn, part, key, pick):  # the least disturbed round of each side
        return pick(r[part][key] for r in runs[onednn])

    tw = best("0", "train", "wall_ms", min) / best("1", "train", "wall_ms", min)
    tc = best("0", "train", "cpu_ms", min) / best("1", "train", "cpu_ms", min)
    fw = best("1", "forward", "images_s", max) / best("0", "forward", "images_s", max)
    fc = best("0", "forward", "cpu_ms_per_image", min) / best("1", "forward", "cpu_ms_per_image", min)
    print(f"oneDNN on vs off (best round of each): train step {tw:.2f}x faster wall, {tc:.2f}x less CPU; "
          f"{args.backbone} forward {fw:.2f}x the images/s, {fc:.2f}x less CPU per image")


if __name__ == "__main__":
    main()
