"""Benchmark (issue 11): one process vs two workers on 127.0.0.1, same data, global batch, seed and epochs.

Fashion-MNIST 10k subset (1,000 images a class, symlinks to the class folders), default `cnn`, test accuracy on a
fixed 2,000-image subset of the test set. Reports wall time, training images/s (sum of the epoch times),
test accuracy, and the cost of one all-reduce of the cnn's gradients between the two workers (timed alone).
One process also runs the imgclass loop under the default strategy (`--loop custom`), so fit vs the custom loop
is measured on the same data.

    .venv/bin/python bench/dist_multiworker.py /work/fmnist [--epochs 3] [--workdir /tmp/imgclass-dist-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import PYTHON, ROOT, evaluate, imgclass, load_average  # noqa: E402

# The custom loop under the default strategy: only for this measurement (the CLI runs fit there).
CUSTOM_DEFAULT = """
import sys
from imgclass_cli.run import distribute
distribute.Distribution.custom_loop = property(lambda self: True)
from imgclass_cli.cli import main
sys.argv = ["imgclass", *sys.argv[1:]]
main()
"""

ALLREDUCE_PROBE = """
import json, sys, time
import tensorflow as tf
impl = tf.distribute.experimental.CommunicationImplementation.RING
strategy = tf.distribute.MultiWorkerMirroredStrategy(
    communication_options=tf.distribute.experimental.CommunicationOptions(implementation=impl))
from imgclass_cli.model import build
with strategy.scope():
    model = build.build_classifier("cnn", 10, 28)
grads = [tf.ones_like(v) for v in model.trainable_variables]

@tf.function
def allreduce():
    # One batched all-reduce of every gradient, as the optimizer does each step.
    return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce("SUM", grads))

for _ in range(5):
    allreduce()
n, t0 = 50, time.perf_counter()
for _ in range(n):
    out = allreduce()
tf.nest.map_structure(lambda t: t.numpy(), out)
ms = (time.perf_counter() - t0) / n * 1000
params = sum(int(tf.size(v)) for v in model.trainable_variables)
print(json.dumps({"ms": ms, "params": params}))
"""


def subset(src: str, dest: str, per_class: int) -> str:
    """per_class symlinks of each class folder (sorted names: the same subset every run)."""
    if os.path.isdir(dest):
        return dest
    tmp = dest + ".partial"
    for cls in sorted(os.listdir(src)):
        os.makedirs(os.path.join(tmp, cls), exist_ok=True)
        for name in sorted(os.listdir(os.path.join(src, cls)))[:per_class]:
            os.symlink(os.path.join(src, cls, name), os.path.join(tmp, cls, name))
    os.rename(tmp, dest)
    return dest


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def two_workers(cmd: list[str], log: str) -> tuple[float, list[str]]:
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs = []
    t0 = time.time()
    for i in range(2):
        env = {**os.environ, "PYTHONPATH": ROOT,
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outs = [p.communicate() for p in procs]
    dt = time.time() - t0
    with open(log, "a") as f:
        for i, (o, e) in enumerate(outs):
            f.write(f"$ worker {i}: {' '.join(cmd)}\n{o}\n{e}\n")
    for p, (_, e) in zip(procs, outs):
        if p.returncode != 0:
            raise SystemExit(f"a worker failed ({p.returncode}):\n{e[-2000:]}")
    return dt, [o + e for o, e in outs]


def epoch_seconds(text: str) -> float:
    return sum(float(s) for s in re.findall(r"^epoch \d+/\d+ .*\((\d+(?:\.\d+)?)s", text, re.M))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("fmnist", help="folder with train/ and test/ class folders")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/imgclass-dist-bench")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    train = subset(os.path.join(args.fmnist, "train"), os.path.join(args.workdir, "train10k"), 1000)
    test = subset(os.path.join(args.fmnist, "test"), os.path.join(args.workdir, "test2k"), 200)
    log = os.path.join(args.workdir, "bench.log")
    common = ["train", train, "--epochs", str(args.epochs), "--force"]
    n_train = 8000  # 10k with the default 20% validation split
    rows = []
    loads = [load_average()]

    dt, text = imgclass(*common, "--out", os.path.join(args.workdir, "one"), "--strategy", "default", log=log)
    rows.append(("one process, Keras fit", dt, epoch_seconds(text), os.path.join(args.workdir, "one")))
    loads.append(load_average())

    script = os.path.join(args.workdir, "custom_default.py")
    with open(script, "w") as f:
        f.write(CUSTOM_DEFAULT)
    from _common import run

    out = os.path.join(args.workdir, "one-custom")
    dt, text = run([PYTHON, script, *common, "--out", out, "--strategy", "default"], log=log)
    rows.append(("one process, imgclass loop", dt, epoch_seconds(text), out))
    loads.append(load_average())

    out = os.path.join(args.workdir, "two")
    dt, texts = two_workers([PYTHON, "-m", "imgclass_cli", *common, "--out", out, "--strategy", "multiworker"], log)
    rows.append(("two workers, loopback", dt, epoch_seconds(texts[0]), out))
    loads.append(load_average())

    probe = os.path.join(args.workdir, "probe.py")
    with open(probe, "w") as f:
        f.write(ALLREDUCE_PROBE)
    _, texts = two_workers([PYTHON, probe], log)
    allreduce = json.loads(texts[0].strip().splitlines()[0]) if texts[0].strip().startswith("{") else \
        json.loads(next(line for line in texts[0].splitlines() if line.startswith("{")))

    print(f"Fashion-MNIST 10k subset ({n_train} train, 2000 val), 2000 test images, default cnn at 28 px, "
          f"{args.epochs} epochs, global batch 64; load averages {' -> '.join(loads)}")
    print(f"{'run':28} {'wall s':>7} {'epochs s':>9} {'images/s':>9} {'test acc':>9}")
    base = None
    for name, wall, epochs_s, run_dir in rows:
        rate = n_train * args.epochs / epochs_s if epochs_s else float("nan")
        acc = evaluate(run_dir, test)
        base = base or rate
        print(f"{name:28} {wall:7.1f} {epochs_s:9.1f} {rate:9.0f} {acc:9.4f}   x{rate / base:.2f} images/s")
    steps = -(-n_train // 64)
    print(f"all-reduce of the cnn's {allreduce['params']:,} gradients between two workers on loopback: "
          f"{allreduce['ms']:.2f} ms per step ({allreduce['ms'] * steps / 1000:.1f} s of each {steps}-step epoch)")


if __name__ == "__main__":
    main()
