"""Out-of-sample class probabilities by k-fold cross-fitting: a cheap classifier (linear discriminant analysis on
standardised embeddings, scikit-learn) is fitted on k-1 folds and predicts the fold it did not see, so every image
gets probabilities from a model that never saw its label. What confident learning needs (data/labelissues.py)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from imgclass_cli.errors import ImgclassError

# Linear discriminant analysis (one Gaussian per class, a shared covariance shrunk by Ledoit-Wolf): closed form, and
# on the embeddings of a run that has fitted the noisy labels it found 3x the flipped labels a logistic regression
# found (docs/benchmarks.md, "Audit").
CLASSIFIER = "linear discriminant analysis (Ledoit-Wolf shrinkage) on standardised embeddings (scikit-learn)"


def check_folds(labels: np.ndarray, class_names: list[str], folds: int) -> None:
    """Stratified k-fold needs at least `folds` images, and every class at least 2 (one to fit on, one to check)."""
    labels = np.asarray(labels)
    if len(labels) < folds:
        raise ImgclassError(f"{len(labels)} image(s) is fewer than the {folds} folds of the label check; add images "
                            f"or pass a smaller --folds")
    counts = np.bincount(labels, minlength=len(class_names))
    lonely = [class_names[i] for i in np.flatnonzero(counts == 1)]
    if lonely:
        raise ImgclassError(f"class {', '.join(lonely)} has only one image: the label check needs at least 2 per "
                            "class (one to learn the class from, one to check)")
    if counts.max() < folds:
        raise ImgclassError(f"no class has {folds} images, as {folds} stratified folds need; pass --folds "
                            f"{max(2, int(counts.max()))} or add images")


def out_of_sample_probs(features: np.ndarray, labels: np.ndarray, num_classes: int, *, folds: int, seed: int,
                        progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(n, num_classes) probabilities, each row from the fold model that did not see that image; folds are
    stratified and seeded. A class missing from a fold's training part gets probability 0 in that fold."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels)
    probs = np.zeros((len(labels), num_classes), dtype=np.float64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the least populated class has only N members"; collinear features
        for done, (fit, held) in enumerate(splitter.split(features, labels), 1):
            clf = make_pipeline(StandardScaler(), LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"))
            clf.fit(features[fit], labels[fit])
            probs[np.ix_(held, clf.classes_)] = clf.predict_proba(features[held])
            if progress is not None:
                progress(done, folds)
    return probs
