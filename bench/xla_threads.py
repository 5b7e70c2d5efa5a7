"""Benchmark: XLA (`jit_compile`) and TensorFlow's thread pools, per stage, in float32 and bfloat16.

Each setting runs in its own process (thread pools are fixed when TensorFlow starts), in turn, for --rounds rounds
(this machine's speed drifts over minutes and is shared):
  - train: steps of the default scratch `cnn` at 28 px, batch 64, with train's optimizer and loss, compiled with
    jit_compile False (imgclass) or True; fed from memory through a tf.data pipeline with prefetch N;
  - features: the frozen VGG16 pass of finetune's feature cache at 160 px, batch 32, as a tf.function with
    jit_compile False (imgclass) or True.
Both from the Resizing layer's output on: XLA has no CPU kernel for the antialiased resize (ScaleAndTranslate), so
a whole imgclass model does not compile. Threads: "default" leaves TensorFlow's choice (inter and intra op = the cores), "intra2/inter1" and
"intra1/inter2" set them (tf.config.threading).

    .venv/bin/python bench/xla_threads.py [--steps 100] [--images 96] [--rounds 2] [--quick]
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
from imgclass_cli.config import TrainConfig
from imgclass_cli.model import build
from imgclass_cli.run.training import make_loss, make_optimizer

stage, policy, jit, intra, inter, prefetch, steps, n_images = sys.argv[1:9]
jit, steps, n_images, prefetch = jit == "1", int(steps), int(n_images), int(prefetch)
t = tf()
if int(intra):
    t.config.threading.set_intra_op_parallelism_threads(int(intra))
if int(inter):
    t.config.threading.set_inter_op_parallelism_threads(int(inter))
keras().utils.set_random_seed(0)
rng = np.random.default_rng(0)
if stage == "train":
    c = TrainConfig.defaults("train")
    from imgclass_cli.model.parts import parts
    full = build.build_classifier("cnn", 10, 28, dropout=c.dropout)
    build.apply_precision(full, policy)
    # From the Resizing layer's output on: XLA has no kernel for the antialiased resize (ScaleAndTranslate), and
    # the pipeline hands the model images at its size already.
    model = keras().Model(parts(full).resize.output, full.output)
    model.compile(optimizer=make_optimizer(c, 8e-3, 750, 5), loss=make_loss(c, 10), jit_compile=jit)
    x = rng.integers(0, 256, (64 * 20, 28, 28, 3)).astype("float32")
    y = rng.integers(0, 10, len(x)).astype("int32")
    ds = t.data.Dataset.from_tensor_slices((x, y)).repeat().batch(64)
    ds = ds.prefetch(prefetch if prefetch >= 0 else t.data.AUTOTUNE) if prefetch else ds
    from imgclass_cli._tf import without_autotune
    ds = without_autotune(ds)
    model.fit(ds, steps_per_epoch=20, epochs=1, verbose=0)  # trace, compile and warm up
    t0, cpu = time.time(), time.process_time()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    print(json.dumps({"ms_per_step": 1000 * (time.time() - t0) / steps,
                      "cpu_ms_per_step": 1000 * (time.process_time() - cpu) / steps}))
else:
    model = build.build_classifier("vgg16", 2, 160, weights="none", trainable_backbone=False)
    build.apply_precision(model, policy)
    from imgclass_cli.model.parts import parts
    extractor = keras().Model(parts(model).resize.output, parts(model).pool.output)  # (see train)
    fn = t.function(lambda x: extractor(x, training=False), jit_compile=jit, reduce_retracing=True)
    x = rng.integers(0, 256, (n_images, 160, 160, 3)).astype("float32")
    fn(x[:32]).numpy()  # trace and compile
    t0, cpu = time.time(), time.process_time()
    for i in range(0, n_images, 32):
        fn(x[i:i + 32]).numpy()
    print(json.dumps({"images_s": n_images / (time.time() - t0),
                      "cpu_ms_per_image": 1000 * (time.process_time() - cpu) / n_images}))
'''

THREADS = {"default": (0, 0), "intra2/inter1": (2, 1), "intra1/inter2": (1, 2)}


def child(stage, policy, jit, threads, prefetch, a) -> dict:
    intra, inter = THREADS[threads]
    args = [sys.executable, "-c", CHILD, stage, policy, "1" if jit else "0", str(intra), str(inter), str(prefetch),
            str(a.steps), str(a.images)]
    p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:160]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def settings(quick: bool) -> list[tuple]:
    """(stage, policy, jit, threads, prefetch); the first of each stage is imgclass's choice."""
    rows = []
    for policy in ("mixed_bfloat16", "float32"):
        rows += [("train", policy, False, "default", -1), ("train", policy, True, "default", -1)]
        rows += [("features", policy, False, "default", 0), ("features", policy, True, "default", 0)]
    if not quick:
        rows += [("train", "mixed_bfloat16", False, th, -1) for th in ("intra2/inter1", "intra1/inter2")]
        rows += [("train", "mixed_bfloat16", False, "default", p) for p in (0, 1)]
        rows += [("features", "mixed_bfloat16", False, th, 0) for th in ("intra2/inter1", "intra1/inter2")]
    return rows


def label(row) -> str:
    stage, policy, jit, threads, prefetch = row
    pre = {-1: "prefetch autotune", 0: "no prefetch"}.get(prefetch, f"prefetch {prefetch}")
    return f"{stage:8} {policy:14} jit {'on ' if jit else 'off'} threads {threads:13} " + \
        (pre if stage == "train" else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="only jit on/off in both precisions")
    a = ap.parse_args()
    rows = settings(a.quick)
    results: dict = {r: [] for r in rows}
    print(f"load average at start {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs", flush=True)
    for rnd in range(a.rounds):
        for row in rows:
            res = child(*row, a)
            results[row].append(res)
            print(f"round {rnd + 1} {label(row)}: {res} (load {os.getloadavg()[0]:.1f})", flush=True)
    print("\nbest of the rounds (train: ms a step, lower is faster; features: images/s, higher is faster)")
    for row in rows:
        ok = [r for r in results[row] if "error" not in r]
        if not ok:
            print(f"  {label(row)}: failed: {results[row][0]['error']}")
            continue
        if row[0] == "train":
            best = min(r["ms_per_step"] for r in ok)
            print(f"  {label(row)}: {best:7.1f} ms/step ({min(r['cpu_ms_per_step'] for r in ok):.1f} CPU-ms)")
        else:
            best = max(r["images_s"] for r in ok)
            print(f"  {label(row)}: {best:7.1f} images/s ({min(r['cpu_ms_per_image'] for r in ok):.1f} CPU-ms/image)")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
