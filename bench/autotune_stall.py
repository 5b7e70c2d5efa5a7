"""Benchmark: the pause when Keras deletes a tf.data iterator, with tf.data autotuning on vs off (_tf.without_autotune).

Keras deletes the training iterator at the start of every epoch (a new one replaces it) and when fit returns. With
autotuning on, TensorFlow 2.21's autotuning thread is not woken by that deletion, which then waits out the thread's
optimisation period (it doubles up to 60 s). This runs the same fit twice at once, in two processes: imgclass's
in-memory training and validation pipelines (data.pipeline.build, 48,000 + 12,000 random 28 px images, batch 64)
as they are, and the same pipelines with autotuning left on. The model is tiny and each step sleeps, so an epoch
costs little CPU and the two processes do not slow each other. Printed per process: the pause at each epoch's
start (from on_epoch_begin to the first batch) and after the last epoch (from on_train_end to fit's return).

    .venv/bin/python bench/autotune_stall.py [--epochs 12] [--epoch-seconds 4]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import PYTHON, ROOT, load_average  # noqa: E402

CHILD = r'''
import json, sys, time
import numpy as np
from imgclass_cli import _tf
from imgclass_cli.data import pipeline
from imgclass_cli.data.folders import Sample
mode, epochs, epoch_seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
if mode == "autotune-on":
    pipeline.without_autotune = lambda ds: ds  # the pipelines as they were before
keras = _tf.keras()
rng = np.random.default_rng(0)
images = rng.integers(0, 255, (60000, 28, 28, 3), dtype=np.uint8)
samples = [Sample(f"{i}.png", int(i % 10)) for i in range(60000)]
spec = pipeline.PipelineSpec(28, 64, 42)
train = pipeline.build(samples[:48000], spec, training=True, images=images[:48000])
val = pipeline.build(samples[48000:], spec, training=False, images=images[48000:])
L = keras.layers
model = keras.Sequential([keras.Input((28, 28, 3)), L.Conv2D(4, 3, strides=4), L.Flatten(), L.Dense(10, activation="softmax")])
model.compile("adam", "sparse_categorical_crossentropy")
steps = 750
marks = {"start": [], "first": [], "end": None}
class Clock(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        marks["start"].append(time.time())
    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            marks["first"].append(time.time())
    def on_train_batch_end(self, batch, logs=None):
        time.sleep(epoch_seconds / steps)
    def on_train_end(self, logs=None):
        marks["end"] = time.time()
t0 = time.time()
model.fit(train, validation_data=val, epochs=epochs, verbose=0, callbacks=[Clock()])
returned = time.time()
pauses = [f - s for s, f in zip(marks["start"], marks["first"])]
print(json.dumps({"mode": mode, "fit": returned - t0, "epoch_start_pauses": pauses[1:], "first_epoch_start": pauses[0],
                  "after_last_epoch": returned - marks["end"]}))
'''


def main():
    args = sys.argv[1:]
    epochs = args[args.index("--epochs") + 1] if "--epochs" in args else "12"
    epoch_seconds = args[args.index("--epoch-seconds") + 1] if "--epoch-seconds" in args else "4"
    print(f"{epochs} epochs of about {epoch_seconds} s of steps each, both settings at once; load average "
          f"{load_average()}")
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = {mode: subprocess.Popen([PYTHON, "-c", CHILD, mode, epochs, epoch_seconds], cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, text=True)
             for mode in ("autotune-off", "autotune-on")}
    results = {}
    for mode, p in procs.items():
        out, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"{mode} failed ({p.returncode})")
        results[mode] = json.loads(out.strip().splitlines()[-1])
    for mode, r in results.items():
        pauses = r["epoch_start_pauses"]
        long = [p for p in pauses if p > 1.0]
        print(f"{mode:13s}: fit {r['fit']:6.1f}s; pauses at epochs 2-{int(epochs)}: total {sum(pauses):5.1f}s, "
              f"{len(long)} over 1 s (max {max(pauses, default=0):4.1f}s); after the last epoch "
              f"{r['after_last_epoch']:4.1f}s")
        print(f"{'':15s}each: {' '.join(f'{p:.1f}' for p in pauses)}")
    on, off = results["autotune-on"], results["autotune-off"]
    lost_on = sum(on["epoch_start_pauses"]) + on["after_last_epoch"]
    lost_off = sum(off["epoch_start_pauses"]) + off["after_last_epoch"]
    print(f"seconds lost to iterator deletion: autotune on {lost_on:.1f}s, off {lost_off:.1f}s; "
          f"fit time ratio on/off {on['fit'] / off['fit']:.2f} (load average {load_average()})")


if __name__ == "__main__":
    main()
