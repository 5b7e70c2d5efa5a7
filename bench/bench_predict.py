"""Benchmark: `imgclass predict` on 1,000 real images against a per-image `model.predict` loop, and every format
side by side on this CPU: the Keras run in float32 and at --precision auto (bfloat16 here), SavedModel, TFLite,
TFLite int8 and ONNX (exports compute in float32). Prints images/s and the ratios. Not run by CI.

    .venv/bin/python bench/bench_predict.py [--work bench/.work] [--images 1000] [--epochs 3]
    .venv/bin/python bench/bench_predict.py --arch vgg16 --image-size 160 --images 256 --no-loop --no-cli

Data: 1,000 Fashion-MNIST test images written as PNG class folders by /work/shared/tools/fashion_mnist_folder.py
(Debian package dataset-fashion-mnist); without it, scikit-learn's digits (`imgclass prepare --example digits`).
A small model (simple-cnn, 32 px) is trained first on the training split (with --arch vgg16: `finetune --weights
none`, one head epoch: random weights predict as fast as ImageNet's); the run and exports are reused when they exist
in --work. Every measurement is preceded by a warm-up, and the best of --repeat runs is reported.
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


def train(work: str, data: str, epochs: int, image_size: int, arch: str = "simple-cnn") -> str:
    from imgclass_cli.config import Augment, TrainConfig
    from imgclass_cli.report import output
    from imgclass_cli.run import training

    run = os.path.join(work, f"run-{arch}-{image_size}")
    if not os.path.exists(os.path.join(run, "model.keras")):
        log(f"training {arch} at {image_size}px for {epochs} epochs on {data}")
        if arch == "simple-cnn":
            cfg = TrainConfig(command="train", data=data, arch="simple-cnn", image_size=image_size, epochs=epochs,
                              augment=Augment.none, out=run)
        else:  # a frozen random backbone and a head: the backbone's speed, without ImageNet weights offline
            cfg = TrainConfig.defaults("finetune", data=data, arch=arch, weights="none", image_size=image_size,
                                       epochs=1, out=run)
        result = training.run(cfg, output.StderrReporter(quiet=True), force=True)
        log(f"  val accuracy {result.report.accuracy:.3f}" if result.report else "  trained")
    return run


def exports(run: str, parity: int = 200) -> dict[str, str]:
    from imgclass_cli.config import ExportConfig
    from imgclass_cli.run import export

    out = {}
    for name, fmt, q in (("savedmodel", "savedmodel", None), ("tflite", "tflite", None),
                         ("tflite-int8", "tflite", "int8"), ("onnx", "onnx", None)):
        path = os.path.join(run, "export", name)
        if not os.path.exists(os.path.join(path, "export.json")):
            r = export.export(run, ExportConfig(format=fmt, quantize=q, parity=parity, out=path, force=True))
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
    ap.add_argument("--no-loop", action="store_true", help="skip the per-image model.predict loop")
    ap.add_argument("--parity", type=int, default=200, help="images of each export's parity check")
    ap.add_argument("--arch", default="simple-cnn", help="simple-cnn (trained) or a backbone (finetune, random)")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)

    import numpy as np

    from imgclass_cli._tf import tf
    from imgclass_cli.run import export as exp
    from imgclass_cli.run import inference, predictors, rundir

    train_dir, test_dir = make_data(a.work)
    run = train(a.work, train_dir, a.epochs, a.image_size, a.arch)
    ex = exports(run, a.parity)
    paths = list(inference.expand_inputs([test_dir]))[: a.images]
    n = len(paths)
    load1 = os.getloadavg()[0]
    log(f"{n} images from {test_dir}; load average {load1:.2f} on {os.cpu_count()} CPUs")

    size = rundir.read_info(run).image_size
    auto = inference.predict_precision(predictors.resolve(run), "auto")
    # Every way predict can run: (label, target, precision); exports compute as exported (float32).
    ways = [("keras float32", run, "float32"), (f"keras auto ({auto.policy})", run, "auto"),
            *[(name, path, "auto") for name, path in ex.items()]]
    results: dict[str, float] = {}  # name -> seconds for n images
    results.update(time_predict_core(ways, paths, a))
    preds = time_compute(run, ex, auto, paths, a, results)
    agree = {}
    if preds:
        x = exp.load_images(paths, size)
        reference = preds["keras float32"].predict(x).argmax(1)
        agree = {k: float(np.mean(v.predict(x).argmax(1) == reference)) for k, v in preds.items()
                 if k != "keras float32"}
    if not a.no_cli:
        results.update(time_cli(run, ex, paths))
    report(results, preds, agree, auto, n, size, load1, a, tf().__version__)


def time_predict_core(ways, paths, a) -> dict[str, float]:
    """The predict core: stream paths, decode in threads, batches of --batch-size, one model call per batch; the
    ways alternate within each of --repeat rounds."""
    from imgclass_cli.config import PredictConfig
    from imgclass_cli.run import inference, predictors

    def predict_core(target, prec):
        choice = inference.predict_precision(predictors.resolve(target), prec)
        predictor = predictors.load(target, choice.policy)
        cfg = PredictConfig(batch_size=a.batch_size)
        list(inference.predict(target, iter(paths[:a.batch_size]), cfg, choice.policy, predictor))  # warm-up

        def go():
            for rec in inference.predict(target, iter(paths), cfg, choice.policy, predictor):
                assert rec["status"] == "ok"
        return go

    runs = {label: predict_core(target, prec) for label, target, prec in ways}
    times: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(a.repeat):
        for label, go in runs.items():
            t0 = time.perf_counter()
            go()
            times[label].append(time.perf_counter() - t0)
    return {f"predict core, {label} (batch {a.batch_size}, incl. decode)": min(times[label]) for label in runs}


def time_compute(run, ex, auto, paths, a, results) -> dict:
    """The per-image model.predict loop (unless --no-loop), then model compute only on arrays decoded once, batch 1
    and --batch-size, into `results`; returns the predictors."""
    from imgclass_cli.run import export as exp
    from imgclass_cli.run import predictors, rundir

    model, info = rundir.load(run)
    size, n = info.image_size, len(paths)
    decode = lambda p: exp.load_images([p], size)  # noqa: E731 - the same decoder as predict
    if not a.no_loop:  # the usual hand-written loop: decode one file, model.predict on a batch of one, repeat
        def per_image_loop():
            for p in paths:
                model.predict(decode(p), verbose=0)

        model.predict(decode(paths[0]), verbose=0)
        results["per-image model.predict loop (incl. decode)"] = best_of(per_image_loop, 1)
    x = exp.load_images(paths, size)
    preds = {"keras float32": predictors.KerasPredictor(rundir.load(run)[0], info.class_names, size),
             f"keras auto ({auto.policy})": predictors.KerasPredictor(rundir.load(run)[0], info.class_names, size,
                                                                     auto.policy),
             **{name: predictors.load(path) for name, path in ex.items()}}
    for label, pred in preds.items():
        for bs in (1, a.batch_size):
            def go(pred=pred, bs=bs):
                for i in range(0, n, bs):
                    pred.predict(x[i:i + bs])
            go()  # warm-up; also resizes the TFLite input once per batch size
            results[f"compute only, {label}, batch {bs}"] = best_of(go, a.repeat)
    return preds


def time_cli(run, ex, paths) -> dict[str, float]:
    """The CLI as a shell user runs it: a new process, TensorFlow import and model load included."""
    exe = os.path.join(os.path.dirname(sys.executable), "imgclass")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "imgclass_cli"]
    listing = "".join(p + "\n" for p in paths)
    results = {}
    for label, target in (("Keras run", run), ("tflite-int8", os.path.join(ex["tflite-int8"], "model.tflite"))):
        def go(target=target):
            subprocess.run([*cmd, "predict", target, "-", "-f", "csv"], input=listing, text=True, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results[f"imgclass predict CLI process, {label} (end to end)"] = best_of(go, 1)
    return results


def report(results, preds, agree, auto, n, size, load1, a, tf_version) -> None:
    print(f"\nimgclass predict benchmark: {n} images, {size}x{size}, {a.arch}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, TensorFlow {tf_version}, "
          f"load average at start {load1:.2f}, at end {os.getloadavg()[0]:.2f}; {auto.line()}")
    width = max(map(len, results))
    print(f"{'measurement':<{width}}  {'seconds':>8}  {'images/s':>9}")
    for k, sec in results.items():
        print(f"{k:<{width}}  {sec:8.2f}  {n / sec:9.1f}")

    def ratio(a_key, b_key):
        return results[b_key] / results[a_key]

    core = f"predict core, keras float32 (batch {a.batch_size}, incl. decode)"
    print("\nratios (higher = the first is faster)")
    if not a.no_loop:
        print(f"  predict core (keras float32) vs per-image model.predict loop: "
              f"{ratio(core, 'per-image model.predict loop (incl. decode)'):6.1f}x")
    for label in preds:
        if label != "keras float32":
            print(f"  predict core, {label} vs keras float32: "
                  f"{ratio(f'predict core, {label} (batch {a.batch_size}, incl. decode)', core):6.2f}x; compute only "
                  f"batch {a.batch_size}: {ratio(f'compute only, {label}, batch {a.batch_size}', f'compute only, keras float32, batch {a.batch_size}'):6.2f}x")
    best = min((k for k in results if k.startswith("predict core")), key=results.get)
    print(f"  fastest predict: {best}, {n / results[best]:.1f} images/s")
    for name, v in agree.items():
        print(f"  top-1 agreement {name} vs keras float32 on all {n} images: {v:.4f}")


if __name__ == "__main__":
    main()
