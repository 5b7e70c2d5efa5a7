"""Every backbone `imgclass backbones` lists, built with random weights at its smallest size: model/parts.py finds
its parts, the feature map is 4-D, and the parts run one after another give the model's own probabilities.
The suite (tests/test_parts.py) builds the smallest member of each family; this builds all of them (about 3 minutes
on 2 cores). Usage: python bench/all_backbones_parts.py"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from imgclass_cli._tf import keras  # noqa: E402
from imgclass_cli.model import backbones, build  # noqa: E402
from imgclass_cli.model.parts import parts  # noqa: E402


def main() -> None:
    started, failed = time.perf_counter(), []
    for name, spec in backbones.BACKBONES.items():
        t0 = time.perf_counter()
        size = max(32, spec.min_size)
        model = build.build_classifier(name, 3, size, weights="none", trainable_backbone=False)
        p = parts(model)
        x = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype("float32")
        fmap = p.features_of(x)
        probs = np.asarray(keras().ops.softmax(p.logits_from_features(fmap)))
        diff = float(np.abs(probs - np.asarray(model(x, training=False))).max())
        ok = p.backbone is not None and len(fmap.shape) == 4 and diff < 1e-5
        failed += [] if ok else [name]
        print(f"{name:18s} {'ok' if ok else 'FAILED'}  feature map {tuple(fmap.shape)}  max diff {diff:.1e}  "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        keras().backend.clear_session()
    print(f"{len(backbones.BACKBONES) - len(failed)}/{len(backbones.BACKBONES)} backbones ok in "
          f"{time.perf_counter() - started:.0f} s" + (f"; failed: {', '.join(failed)}" if failed else ""))


if __name__ == "__main__":
    main()
