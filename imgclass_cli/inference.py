"""evaluate and predict on top of a run directory: the model, labels and image size travel with the run."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from imgclass_cli import dataset, rundir
from imgclass_cli.errors import ImgclassError
from imgclass_cli.metrics import Report, compute_report


@dataclass
class Evaluation:
    report: Report
    paths: list[str]
    y_true: np.ndarray
    probs: np.ndarray


def evaluate(run_path: str, data_path: str, *, split: str | None = None, batch_size: int = 32,
             on_bad_image: str = "skip", warn=None) -> Evaluation:
    from imgclass_cli import pipeline, verify
    from imgclass_cli.training import predict_probs

    info = rundir.read_info(run_path)  # labels first: a class mismatch fails before the model loads
    data = dataset.scan_for_eval(data_path, split)
    # Every file is decode-checked before the model sees it: a bad file is skipped (named) or stops here.
    data = verify.screen(data, on_bad_image, warn or (lambda m: None))
    known = {name: i for i, name in enumerate(info.class_names)}
    unknown = [c for c in data.class_names if c not in known]
    if unknown:
        raise ImgclassError(
            f"{data.root}: class folder(s) {', '.join(unknown)} are not classes of this model "
            f"({', '.join(info.class_names)}); evaluate only on the classes the model was trained on"
        )
    samples = [dataset.Sample(s.path, known[data.class_names[s.label]], s.orientation) for s in data.splits["eval"]]
    model, _ = rundir.load(run_path)
    spec = pipeline.PipelineSpec(info.image_size, batch_size)
    y, probs = predict_probs(model, pipeline.build(samples, spec, training=False))
    report = compute_report(
        y, probs, info.class_names,
        extra={"run": os.path.abspath(run_path), "data": os.path.abspath(data.root), "split": split or "auto"},
    )
    return Evaluation(report, [s.path for s in samples], y, probs)


def expand_inputs(args: Iterable[str], stdin: Iterable[str] | None = None) -> Iterator[str]:
    """Paths to predict, in input order: files as given, folders recursively (images only, sorted), '-' = stdin lines."""
    for arg in args:
        if arg == "-":
            for line in stdin or ():
                line = line.rstrip("\r\n")
                if line:
                    yield from expand_inputs([line])
        elif os.path.isdir(arg):
            # The same walk as training's scan: ignore rules, content sniffing, symlink loops walked once.
            yield from dataset.walk_images(arg, [])
        else:
            yield arg


def predict(run_path: str, paths: Iterable[str], *, top_k: int = 1, batch_size: int = 32) -> Iterator[dict]:
    """One record per path, in input order: status ok with label/confidence/top_k, or status error with the reason.

    run_path: a run directory, an export directory or a .tflite file (see predictors.py).
    """
    from imgclass_cli import pipeline, predictors

    predictor = predictors.load(run_path)
    names = predictor.class_names
    k = max(1, min(top_k, len(names)))
    for batch in pipeline.iter_batches(paths, predictor.image_size, batch_size):
        probs = predictor.predict(batch.images) if batch.images is not None else None
        j = 0
        for path, ok, err in zip(batch.paths, batch.ok, batch.errors):
            if not ok:
                yield {"path": path, "status": "error", "error": err, "label": None, "confidence": None, "top_k": []}
                continue
            p = probs[j]
            j += 1
            order = np.argsort(-p, kind="stable")[:k]
            yield {
                "path": path,
                "status": "ok",
                "error": None,
                "label": names[order[0]],
                "confidence": float(p[order[0]]),
                "top_k": [{"label": names[i], "score": float(p[i])} for i in order],
            }
