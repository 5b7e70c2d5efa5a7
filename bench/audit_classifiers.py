"""Benchmark: which cheap classifier the label check cross-fits on the embeddings (the figure behind
model/crossfit.py's choice). Not run by CI; needs the folder and run of bench/audit_labels.py.

    .venv/bin/python bench/audit_labels.py                       # makes the noisy folder and the run
    OMP_NUM_THREADS=1 .venv/bin/python bench/audit_classifiers.py [--run /tmp/imgclass-bench-audit-labels/run-defaults]

The run's penultimate embeddings of every image of the noisy Fashion-MNIST folder, then for each classifier the
same 5 stratified seeded folds, confident learning (data/labelissues.py) on its out-of-sample probabilities, and
the precision and recall against the flipped labels; split by whether the run trained on the image (its
split.csv), since a run that fitted the noisy labels has learnt the flipped ones it saw.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench._common import load_average  # noqa: E402

WORK = "/tmp/imgclass-bench-audit-labels"


def embeddings(folder: str, run: str):
    from PIL import Image

    from imgclass_cli.model import embeddings as emb_mod
    from imgclass_cli.run import rundir

    classes = sorted(os.listdir(folder))
    paths, labels = [], []
    for i, c in enumerate(classes):
        names = sorted(os.listdir(os.path.join(folder, c)))
        paths += [os.path.join(folder, c, f) for f in names]
        labels += [i] * len(names)
    truth = np.array([classes.index(os.path.basename(p).rsplit("-", 1)[0]) for p in paths])
    model, info = rundir.load(run)
    emb = emb_mod.penultimate(model, info.image_size, run)
    feats = []
    for i in range(0, len(paths), 512):
        x = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) for p in paths[i:i + 512]])
        feats.append(emb.fn(x).numpy())
    trained = {os.path.join(folder, r["path"]) for r in csv.DictReader(open(os.path.join(run, "split.csv")))
               if r["split"] == "train"}
    return np.concatenate(feats), np.array(labels), truth, np.array([p in trained for p in paths])


def main() -> None:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from imgclass_cli.data import labelissues

    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=os.path.join(WORK, "run-defaults"))
    ap.add_argument("--data", default=os.path.join(WORK, "noisy-20000-0.05-0"))
    args = ap.parse_args()
    x, labels, truth, trained = embeddings(args.data, args.run)
    flipped = labels != truth
    candidates = {
        "logistic regression C=1 (200 iterations)": lambda: LogisticRegression(C=1.0, max_iter=200),
        "logistic regression C=0.01": lambda: LogisticRegression(C=0.01, max_iter=100),
        "LDA": lambda: LinearDiscriminantAnalysis(),
        "LDA, Ledoit-Wolf shrinkage (imgclass)": lambda: LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"),
    }
    print(f"{len(labels)} images, {flipped.sum()} flipped ({(flipped & trained).sum()} in the run's training split); "
          f"embeddings of {args.run}; load average {load_average()}")
    warnings.simplefilter("ignore")
    for name, make in candidates.items():
        t0 = time.perf_counter()
        probs = np.zeros((len(labels), labels.max() + 1))
        for fit, held in StratifiedKFold(5, shuffle=True, random_state=42).split(x, labels):
            clf = make_pipeline(StandardScaler(), make()).fit(x[fit], labels[fit])
            probs[np.ix_(held, clf.classes_)] = clf.predict_proba(x[held])
        seconds = time.perf_counter() - t0
        flag = np.zeros(len(labels), bool)
        flag[labelissues.confident_joint(labels, probs).flagged] = True
        tp = flag & flipped
        parts = [f"{name}: {seconds:.1f}s, {flag.sum()} flagged, precision {tp.sum() / max(1, flag.sum()):.3f}, "
                 f"recall {tp.sum() / flipped.sum():.3f}"]
        for where, mask in (("seen by the run", trained), ("not seen", ~trained)):
            parts.append(f"recall {where} {(tp & mask).sum() / max(1, (flipped & mask).sum()):.3f}")
        print("; ".join(parts), flush=True)


if __name__ == "__main__":
    main()
