"""Benchmark: `imgclass predict` on 1,000 real images against a per-image `model.predict` loop, and TFLite
against Keras on this CPU. Prints images/s and the ratios. Not run by CI.

    .venv/bin/python bench/bench_predict.py [--work bench/.work] [--images 1000] [--epochs 3]

Data: 1,000 Fashion-MNIST test images written as PNG class folders by /work/shared/tools/fashion_mnist_folder.py
(Debian package dataset-fashion-mnist); without it, scikit-learn's digits (`imgclass prepare --example digits`).
A small model (simple-cnn, 32 px) is trained first on the training split; the run and exports are reused when
they exist in --work. Every measurement is preceded by a warm-up, and the best of --repeat runs is reported.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

FASHION_TOOL = "/work/shared/tools/fashion_mnist_folder.py"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_data(work: str) -> tuple[str, str]:
    """(train folder, test folder) of real images."""
    fashion = os.path.join(work, "fashion")
    if not os.path.isdir(fashion) and os.path.exists(FASHION_TOOL) and os.path.isdir("/usr/share/datasets/fashion-mnist"):
        log("writing Fashion-MNIST PNGs (100 per class per split)")
        subprocess.run([sys.executable, FASHION_TOOL, fashion, "--per-class", "100"], check=True)
    if os.path.isdir(fashion):
        return os.path.join(fashion, "train"), os.path.join(fashion, "test")
    digits = os.path.join(work, "digits")
    if not os.path.isdir(digits):
        log("Fashion-MNIST not available: writing scikit-learn digits")
        from imgclass_cli.config import ExampleConfig
        from imgclass_cli.data import examples

        examples.write_digits(digits, ExampleConfig())
    return os.path.join(digits, "train"), os.path.join(digits, "test")


def train(work: str, data: str, epochs: int, image_size: int) -> str:
    from imgclass_cli.config import Augment, TrainConfig
    from imgclass_cli.report import output
    from imgclass_cli.run import training

    run = os.path.join(work, "run")
    if not os.path.exists(os.path.join(run, "model.keras")):
        log(f"training simple-cnn at {image_size}px for {epochs} epochs on {data}")
        cfg = TrainConfig(command="train", data=data, arch="simple-cnn", image_size=image_size, epochs=epochs,
                          augment=Augment.none, out=run)
        result = training.run(cfg, output.StderrReporter(quiet=True), force=True)
        log(f"  val accuracy {result.report.accuracy:.3f}" if result.report else "  trained")
    return run


def exports(run: str) -> dict[str, str]:
    from imgclass_cli.config import ExportConfig
    from imgclass_cli.run import export

    out = {}
    for name, q in (("tflite", None), ("tflite-int8", "int8")):
        path = os.path.join(run, "export", name)
        if not os.path.exists(os.path.join(path, "export.json")):
            r = export.export(run, ExportConfig(format="tflite", quantize=q, parity=200, out=path, force=True))
            log(f"exported {name}{' (' + r.int8_mode + ')' if r.int8_mode else ''}: "
                f"top-1 agreement {r.parity.agreement:.4f} on {r.parity.images} images")
        out[name] = path
    return out


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".work"))
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-cli", action="store_true", help="skip the end-to-end CLI process timings")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)

    import numpy as np

    from imgclass_cli._tf import tf
    from imgclass_cli.config import PredictConfig
    from imgclass_cli.run import export as exp
    from imgclass_cli.run import inference, predictors, rundir

    train_dir, test_dir = make_data(a.work)
    run = train(a.work, train_dir, a.epochs, a.image_size)
    ex = exports(run)
    paths = list(inference.expand_inputs([test_dir]))[: a.images]
    n = len(paths)
    load1 = os.getloadavg()[0]
    log(f"{n} images from {test_dir}; load average {load1:.2f} on {os.cpu_count()} CPUs")

    model, info = rundir.load(run)
    size = info.image_size
    results: dict[str, float] = {}  # name -> seconds for n images

    # 1. The predict core: stream paths, decode in threads, batches of --batch-size, one model call per batch.
    def predict_core(target):
        def go():
            for rec in inference.predict(target, iter(paths), PredictConfig(batch_size=a.batch_size)):
                assert rec["status"] == "ok"
        return go

    list(inference.predict(run, iter(paths[:64]), PredictConfig(batch_size=a.batch_size)))  # warm-up (graph tracing)
    results["predict core, Keras (batch 32, incl. decode)"] = best_of(predict_core(run), a.repeat)
    for name, path in ex.items():
        list(inference.predict(path, iter(paths[:64]), PredictConfig(batch_size=a.batch_size)))
        results[f"predict core, {name} (batch 32, incl. decode)"] = best_of(predict_core(path), a.repeat)

    # 2. The usual hand-written loop: decode one file, model.predict on a batch of one, repeat.
    decode = lambda p: exp.load_images([p], size)  # noqa: E731 - the same decoder as predict

    def per_image_loop():
        for p in paths:
            model.predict(decode(p), verbose=0)

    model.predict(decode(paths[0]), verbose=0)
    results["per-image model.predict loop (incl. decode)"] = best_of(per_image_loop, 1)

    # 3. Model compute only, on arrays decoded once: Keras vs TFLite, batch 1 and batch 32.
    x = exp.load_images(paths, size)
    keras_p = predictors.KerasPredictor(model, info.class_names, size)
    tfl = {name: predictors.load(path) for name, path in ex.items()}
    for label, pred in [("Keras model(x)", keras_p), *[(f"TFLite {k}", v) for k, v in tfl.items()]]:
        for bs in (1, a.batch_size):
            def go(pred=pred, bs=bs):
                for i in range(0, n, bs):
                    pred.predict(x[i:i + bs])
            go()  # warm-up; also resizes the TFLite input once per batch size
            results[f"compute only, {label}, batch {bs}"] = best_of(go, a.repeat)
    agree = {k: float(np.mean(v.predict(x).argmax(1) == keras_p.predict(x).argmax(1))) for k, v in tfl.items()}

    # 4. The CLI as a shell user runs it: a new process, TensorFlow import and model load included.
    if not a.no_cli:
        exe = os.path.join(os.path.dirname(sys.executable), "imgclass")
        cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "imgclass_cli"]
        listing = "".join(p + "\n" for p in paths)
        for label, target in (("Keras run", run), ("tflite-int8", os.path.join(ex["tflite-int8"], "model.tflite"))):
            def go(target=target):
                subprocess.run([*cmd, "predict", target, "-", "-f", "csv"], input=listing, text=True, check=True,
                               stdout=subprocess.DEVNULL)
            results[f"imgclass predict CLI process, {label} (end to end)"] = best_of(go, 1)

    print(f"\nimgclass predict benchmark: {n} images, {size}x{size}, simple-cnn, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, TensorFlow {tf().__version__}, load average at start {load1:.2f}")
    width = max(map(len, results))
    print(f"{'measurement':<{width}}  {'seconds':>8}  {'images/s':>9}")
    for k, s in results.items():
        print(f"{k:<{width}}  {s:8.2f}  {n / s:9.0f}")

    def ratio(a_key, b_key):
        return results[b_key] / results[a_key]

    core = "predict core, Keras (batch 32, incl. decode)"
    loop = "per-image model.predict loop (incl. decode)"
    print("\nratios (higher = the first is faster)")
    print(f"  predict core (Keras) vs per-image model.predict loop: {ratio(core, loop):6.1f}x")
    for name in ex:
        print(f"  predict core ({name}) vs predict core (Keras):       {ratio(f'predict core, {name} (batch 32, incl. decode)', core):6.2f}x")
    for name in ex:
        for bs in (1, a.batch_size):
            k = f"compute only, Keras model(x), batch {bs}"
            t = f"compute only, TFLite {name}, batch {bs}"
            print(f"  TFLite {name} vs Keras, compute only, batch {bs:>2}:     {ratio(t, k):6.2f}x")
    for name, v in agree.items():
        print(f"  top-1 agreement {name} vs Keras on all {n} images: {v:.4f}")


if __name__ == "__main__":
    main()
