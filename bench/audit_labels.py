"""Benchmark: label issues found by `imgclass audit` on Fashion-MNIST with 5% of the labels flipped, against
cleanlab's find_label_issues on the same out-of-sample probabilities. Not run by CI.

    .venv/bin/pip install cleanlab        # the reference only: never a dependency of imgclass (AGPL)
    .venv/bin/python bench/audit_labels.py [--images 20000] [--noise 0.05] [--seed 0]

Steps: a stratified random subset of --images of /work/fmnist/train (read-only: the PNGs are copied into a new
folder under /tmp), with --noise of them moved to a class folder chosen uniformly among the other nine; `imgclass
train` from scratch on that noisy folder (the defaults: cnn at 28 px); `imgclass audit --run` on it; the
precision and recall of the flagged set against the flipped set. Then the out-of-sample probabilities are
recomputed the way the audit computes them (the run's penultimate layer, the same 5 stratified folds and seed,
the same classifier), our rule is applied to them again (it must give the audit's set: the same
computation) and cleanlab's find_label_issues with its default (filter_by='prune_by_noise_rate') and with
filter_by='confident_learning' (the rule we implement) on the very same probabilities.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench._common import imgclass, load_average  # noqa: E402

FMNIST = "/work/fmnist/train"
WORK = "/tmp/imgclass-bench-audit-labels"


def noisy_folder(n: int, noise: float, seed: int, reuse: bool = False) -> tuple[str, dict[str, str], list[str]]:
    """(folder, {path in folder: true class} of the flipped images, class names); `reuse`: keep an existing folder
    (the same arguments make the same folder)."""
    rng = random.Random(seed)
    classes = sorted(os.listdir(FMNIST))
    per_class = n // len(classes)
    folder = os.path.join(WORK, f"noisy-{n}-{noise}-{seed}")
    if not reuse:
        shutil.rmtree(folder, ignore_errors=True)
    chosen = [(c, f) for c in classes for f in rng.sample(sorted(os.listdir(os.path.join(FMNIST, c))), per_class)]
    flipped = set(rng.sample(range(len(chosen)), round(noise * len(chosen))))
    truth = {}
    for k, (c, f) in enumerate(chosen):
        given = rng.choice([x for x in classes if x != c]) if k in flipped else c
        dst = os.path.join(folder, given, f"{c}-{f}")  # names stay unique across classes
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.exists(dst):
            shutil.copyfile(os.path.join(FMNIST, c, f), dst)
        if k in flipped:
            truth[os.path.abspath(dst)] = c
    return folder, truth, classes


def scores(flagged: set[str], truth: set[str]) -> str:
    tp = len(flagged & truth)
    p = tp / len(flagged) if flagged else 0.0
    r = tp / len(truth) if truth else 0.0
    return f"{len(flagged)} flagged, precision {p:.3f}, recall {r:.3f}"


def recomputed_probs(folder: str, run: str, classes: list[str], folds: int, seed: int):
    """The audit's computation again: samples in scan order, the run's penultimate layer, cross-fitting."""
    from PIL import Image

    from imgclass_cli.model import crossfit, embeddings
    from imgclass_cli.run import rundir

    paths, labels = [], []
    for i, c in enumerate(classes):
        names = sorted(os.listdir(os.path.join(folder, c)))
        paths += [os.path.abspath(os.path.join(folder, c, f)) for f in names]
        labels += [i] * len(names)
    model, info = rundir.load(run)
    from imgclass_cli import precision

    # In the precision the audit chose (--precision auto), so that our rule gives the audit's set again.
    emb = embeddings.penultimate(model, info.image_size, run, precision.resolve("auto").policy)
    feats = []
    for i in range(0, len(paths), 256):
        x = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) for p in paths[i:i + 256]])
        feats.append(emb.fn(x).numpy())
    labels = np.array(labels)
    probs = crossfit.out_of_sample_probs(np.concatenate(feats), labels, len(classes), folds=folds, seed=seed)
    return paths, labels, probs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-args", default="", help="extra options for imgclass train, e.g. '--epochs 6'")
    ap.add_argument("--reuse-run", action="store_true", help="audit the run of an earlier call (same folder)")
    args = ap.parse_args()
    folder, truth, classes = noisy_folder(args.images, args.noise, args.seed, args.reuse_run)
    tag = "-".join(args.train_args.split()).replace("--", "") or "defaults"
    run, out = os.path.join(WORK, f"run-{tag}"), os.path.join(WORK, f"audit-{tag}")
    print(f"{args.images} Fashion-MNIST images, {len(truth)} labels flipped; load average {load_average()}", flush=True)
    seconds = 0.0
    if not (args.reuse_run and os.path.exists(os.path.join(run, "metrics.json"))):
        seconds, _ = imgclass("train", folder, "--out", run, "--force", "-q", *args.train_args.split())
    print(f"train ({args.train_args or 'defaults'}): {seconds:.0f}s; validation accuracy (noisy labels) "
          f"{json.load(open(os.path.join(run, 'metrics.json')))['accuracy']:.4f}; load average {load_average()}",
          flush=True)
    seconds, _ = imgclass("audit", folder, "--run", run, "--out", out, "--force", "-q", "--format", "json")
    report = json.load(open(os.path.join(out, "audit.json")))
    ours = {os.path.abspath(r["path"]) for r in csv.DictReader(open(os.path.join(out, "issues.csv")))
            if r["issue"] == "label"}
    t = report["timings"]
    print(f"audit: {seconds:.0f}s wall, {t['total'] / report['images'] * 1e4:.0f}s per 10,000 images (stages: "
          + ", ".join(f"{k} {v:.1f}s" for k, v in t.items()) + f"); out-of-sample accuracy "
          f"{report['checks']['label']['out_of_sample_accuracy']:.4f}; load average {load_average()}")
    print(f"imgclass audit (confident learning, ours): {scores(ours, set(truth))}")
    paths, labels, probs = recomputed_probs(folder, run, classes, report["checks"]["label"]["folds"],
                                            report["checks"]["label"]["seed"])
    from imgclass_cli.data import labelissues

    again = {paths[i] for i in labelissues.confident_joint(labels, probs).flagged}
    print(f"ours on the recomputed probabilities: {scores(again, set(truth))}; same set as the audit: {again == ours}")
    from cleanlab.filter import find_label_issues

    for filter_by in ("prune_by_noise_rate", "confident_learning"):
        t0 = time.perf_counter()
        idx = find_label_issues(labels, probs, filter_by=filter_by, return_indices_ranked_by="self_confidence")
        theirs = {paths[i] for i in idx}
        print(f"cleanlab find_label_issues(filter_by={filter_by!r}): {scores(theirs, set(truth))} "
              f"({time.perf_counter() - t0:.2f}s); same set as ours: {theirs == again} "
              f"(ours only {len(again - theirs)}, theirs only {len(theirs - again)})")


if __name__ == "__main__":
    main()
