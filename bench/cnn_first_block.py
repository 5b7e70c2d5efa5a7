"""Benchmark: the default cnn's training step with and without BatchNorm in its first block (issue 12).

Both networks are built the way model/build.py builds the cnn (the second is today's default), trained on the same
random 28 px batches of 64 (Fashion-MNIST's shape) from memory, in one process, alternating for --rounds rounds.
Printed per network: wall and CPU milliseconds per step, the CPU/wall ratio (how many of the cores the step keeps
busy), and what that makes of an epoch of 48,000 images; then the ratio.

    .venv/bin/python bench/cnn_first_block.py [--steps 120] [--rounds 2] [--size 28]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from imgclass_cli._tf import keras, tf, without_autotune  # noqa: E402  (sets TF_ENABLE_ONEDNN_OPTS as imgclass does)
from imgclass_cli.model import build  # noqa: E402


def cnn(first_block_batchnorm: bool, size: int):
    """build._scratch's cnn, with the first block as it was before (conv-BatchNorm-ReLU) when asked."""
    model = build.build_classifier("cnn", 10, size)
    if not first_block_batchnorm:
        return model
    L = keras().layers
    inputs, x = build._input_and_resize(size)
    x = L.Rescaling(1.0 / 255, name="rescale")(x)
    for i, filters in enumerate((32, 64, 128, 256)):
        x = L.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = L.BatchNormalization(momentum=0.9)(x)
        x = L.Activation("relu")(x)
        if i < 3:
            x = L.MaxPooling2D()(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(0.2)(x)
    return keras().Model(inputs, L.Dense(10, activation="softmax")(x))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--size", type=int, default=28)
    a = ap.parse_args()
    import numpy as np

    t = tf()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (64 * 40, a.size, a.size, 3), dtype=np.uint8)
    y = rng.integers(0, 10, len(x))
    ds = t.data.Dataset.from_tensor_slices((x, y)).repeat().batch(64).map(lambda u, v: (t.cast(u, t.float32), v))
    # tf.data autotuning off, as in every imgclass pipeline (_tf.without_autotune): with it on, the autotuning
    # thread's timed wait paced every step here at exactly 85.3 or 128 ms, whatever the model (issue 12, fifth pass).
    ds = without_autotune(ds.prefetch(2))
    models = {"BatchNorm in block 1 (before)": cnn(True, a.size), "no BatchNorm in block 1 (default)": cnn(False, a.size)}
    for m in models.values():
        m.compile(keras().optimizers.AdamW(1e-3), "sparse_categorical_crossentropy")
        m.fit(ds, steps_per_epoch=20, epochs=1, verbose=0)  # trace and warm up
    best = {}
    for r in range(a.rounds):
        for name, m in models.items():
            w0, c0 = time.perf_counter(), time.process_time()
            m.fit(ds, steps_per_epoch=a.steps, epochs=1, verbose=0)
            wall, cpu = (time.perf_counter() - w0) / a.steps, (time.process_time() - c0) / a.steps
            print(f"round {r + 1} {name:34s}: {1000 * wall:6.1f} ms/step, {1000 * cpu:6.1f} CPU-ms/step "
                  f"(CPU/wall {cpu / wall:.2f}); an epoch of 48,000 images {wall * 750:5.1f} s", flush=True)
            best[name] = min(best.get(name, wall), wall)
    before, after = best.values()
    print(f"best of {a.rounds}: {1000 * before:.1f} -> {1000 * after:.1f} ms/step, {before / after:.2f}x faster "
          f"without BatchNorm in block 1")


if __name__ == "__main__":
    main()
