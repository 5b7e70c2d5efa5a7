"""`imgclass explain` over every backbone `imgclass backbones` lists, with random weights: each classifier is built at
128 px (weights none, frozen backbone), written as a run directory, and explained through the command's own flow
(run/explain.py) on two images, one of them not square. Checks each heatmap: the input image's height x width,
float32, finite, 0..1, and not constant where the feature map has more than one cell. The suite
(tests/test_gradcam.py) runs one nested backbone; this runs all of them (tens of minutes on 2 cores).

    .venv/bin/python bench/all_backbones_explain.py [--size 128] [--only NAME,NAME]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from imgclass_cli import __version__  # noqa: E402
from imgclass_cli._tf import keras  # noqa: E402
from imgclass_cli.config import ExplainConfig, TrainConfig  # noqa: E402
from imgclass_cli.model import backbones, build  # noqa: E402
from imgclass_cli.run import explain, rundir  # noqa: E402


def images(folder: str) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for name, (h, w) in (("square", (96, 96)), ("wide", (60, 150))):
        path = os.path.join(folder, f"{name}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def write_run(folder: str, name: str, size: int) -> None:
    model = build.build_classifier(name, 3, size, weights="none", trainable_backbone=False)
    options = TrainConfig.defaults("finetune", arch=name, weights="none").options()
    config = {rundir.VERSION_KEY: __version__, "command": "finetune", "options": options, "image_size": size}
    rundir.save(folder, model, ["a", "b", "c"], config, [], None, [])


def check(name: str, size: int, tmp: str, inputs: list[str]) -> tuple[bool, str]:
    run = os.path.join(tmp, name)
    os.makedirs(run)
    try:
        write_run(run, name, size)
        job = explain.start(run, inputs, ExplainConfig(out=os.path.join(tmp, f"{name}-out")))
        problems, shapes = [], []
        for rec, path in zip(job.records, inputs):
            heat = np.load(rec["npy"])
            with Image.open(path) as im:
                w, h = im.size
            shapes.append(f"{heat.shape[0]}x{heat.shape[1]}")
            if heat.shape != (h, w) or heat.dtype != np.float32 or not np.isfinite(heat).all():
                problems.append(f"{os.path.basename(path)}: shape {heat.shape} {heat.dtype}")
            elif heat.min() < 0 or heat.max() > 1 or heat.max() == heat.min():
                problems.append(f"{os.path.basename(path)}: range {heat.min():.3f}..{heat.max():.3f}")
        return not problems, ", ".join(problems) or "heatmaps " + " ".join(shapes)
    finally:
        shutil.rmtree(run, ignore_errors=True)
        shutil.rmtree(os.path.join(tmp, f"{name}-out"), ignore_errors=True)
        keras().backend.clear_session()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128, help="input size: 128 px gives a 4x4 map at stride 32")
    ap.add_argument("--only", default="", help="comma-separated backbone names")
    a = ap.parse_args()
    names = [n for n in backbones.BACKBONES if not a.only or n in a.only.split(",")]
    tmp = tempfile.mkdtemp(prefix="bench-explain-")
    started, failed = time.perf_counter(), []
    try:
        inputs = images(tmp)
        for name in names:
            t0 = time.perf_counter()
            size = max(a.size, backbones.BACKBONES[name].min_size)
            try:
                ok, detail = check(name, size, tmp, inputs)
            except Exception as e:  # a failure of one backbone is a finding, not the end of the run
                ok, detail = False, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            failed += [] if ok else [name]
            print(f"{name:18s} {'ok' if ok else 'FAILED'}  {size} px  {detail}  {time.perf_counter() - t0:.1f} s",
                  flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(names) - len(failed)}/{len(names)} backbones explained in {time.perf_counter() - started:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""))


if __name__ == "__main__":
    main()
