"""Which --tta views help (docs/benchmarks.md, "Calibration and test-time augmentation"): the accuracy and ECE of
each candidate view alone and of averages of them, from one pass per view over the evaluated images.

    .venv/bin/python bench/tta_views.py RUN DATA [--batch-size 256]

e.g. RUN the Fashion-MNIST run of bench/calibration_tta.py and DATA /work/fmnist/test. The candidates: the
original, the horizontal flip, the four corner crops and the centre crop at 90% and 95% of the side (each resized
back with the project's resize); averages of probabilities at the run's temperature.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import load_average  # noqa: E402


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        raise SystemExit(__doc__)
    import numpy as np

    from imgclass_cli._tf import tf
    from imgclass_cli.config import RESIZE_ANTIALIAS, RESIZE_INTERPOLATION
    from imgclass_cli.data import dataset, pipeline
    from imgclass_cli.report import calibration as cal
    from imgclass_cli.run import inference, rundir

    run, data = args[0], args[1]
    batch = int(args[args.index("--batch-size") + 1]) if "--batch-size" in args else 256
    print(f"{time.strftime('%Y-%m-%d %H:%M')}: {run} on {data}; load average {load_average()} (2-core machine, shared)")
    model, info = rundir.load(run)
    t = inference.run_temperature(model, run)
    known = {n: i for i, n in enumerate(info.class_names)}
    ds = dataset.scan_for_eval(data)
    samples = [s.__class__(s.path, known[ds.class_names[s.label]]) for s in ds.splits["eval"]]
    size = info.image_size
    t_ = tf()

    def crop(f: float, where: str):
        c = round(f * size)
        d = size - c
        oy, ox = {"tl": (0, 0), "tr": (0, d), "bl": (d, 0), "br": (d, d), "c": (d // 2, d // 2)}[where]
        return lambda x: t_.image.resize(x[:, oy:oy + c, ox:ox + c, :], (size, size), method=RESIZE_INTERPOLATION,
                                         antialias=RESIZE_ANTIALIAS)

    views = {"original": lambda x: x, "flip": lambda x: t_.reverse(x, axis=[2])}
    for f in (0.9, 0.95):
        for where in ("tl", "tr", "bl", "br", "c"):
            views[f"crop{int(f * 100)}_{where}"] = crop(f, where)
    names = list(views)
    started = time.time()
    y, logits = inference.predict_logits(model, pipeline.build(samples, pipeline.PipelineSpec(size, batch, 0),
                                                               training=False), views=[views[n] for n in names])
    print(f"{len(names)} views of {len(y)} images in {time.time() - started:.0f}s; temperature {t:.4f}")
    probs = {n: cal.softmax(logits[i], t) for i, n in enumerate(names)}

    def show(label: str, members: list[str]):
        p = np.mean([probs[m] for m in members], axis=0)
        print(f"  {label:<44} accuracy {np.mean(p.argmax(1) == y):.4f}  ece {cal.ece(p, y):.4f}  nll {cal.nll(p, y):.4f}")

    print("each view alone:")
    for n in names:
        show(n, [n])
    print("averages:")
    corners = ("tl", "tr", "bl", "br")
    show("original + flip", ["original", "flip"])
    for f in (90, 95):
        show(f"original + 4 corner crops {f}%", ["original", *(f"crop{f}_{w}" for w in corners)])
        show(f"original + flip + 4 corner crops {f}%", ["original", "flip", *(f"crop{f}_{w}" for w in corners)])
        show(f"original + centre crop {f}%", ["original", f"crop{f}_c"])
        show(f"original + flip + centre crop {f}%", ["original", "flip", f"crop{f}_c"])
    print(f"load average at the end {load_average()}")


if __name__ == "__main__":
    main()
