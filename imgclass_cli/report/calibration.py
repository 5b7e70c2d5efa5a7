"""How far a model's confidence can be trusted, in NumPy and SciPy only: temperature scaling (Guo et al. 2017, "On
Calibration of Modern Neural Networks"), expected calibration error, negative log-likelihood, the Brier score, the
reliability diagram's bins and the risk-coverage table of "answer only above a confidence"."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ECE_BINS = 15  # equal-width bins of the top-1 confidence, as Guo et al. report ECE
# Probabilities are clipped here before the log, as scikit-learn's log_loss does: one confident mistake costs at
# most -log(eps) = 36 nats instead of infinity.
NLL_EPS = float(np.finfo(np.float64).eps)
# The fixed thresholds of the risk-coverage table, and the coverages whose threshold it also lists.
RISK_THRESHOLDS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
RISK_COVERAGES = (0.9, 0.8, 0.5)
THRESHOLD_DECIMALS = 4  # thresholds found from the data are rounded down to this: a value a person can type


def softmax(logits, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / T) in float64, stable for any finite logits."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def logits_nll(logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(logits / T) computed from the logits (log-sum-exp: exact even where
    a probability would round to 0)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    labels = np.asarray(labels, dtype=int)
    if len(labels) == 0:
        return 0.0
    top = z.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(labels)), labels]))


@dataclass(frozen=True)
class TemperatureFit:
    temperature: float
    nll_before: float  # at T = 1
    nll_after: float  # at the fitted T
    at_bound: bool  # the optimum is at (or beyond) a bound: no minimum inside them
    mistakes: int  # wrong top-1 predictions; with none the NLL falls all the way to T -> 0 (no minimum at all)


def fit_temperature(logits, labels, bounds: tuple[float, float] = (0.05, 20.0)) -> TemperatureFit:
    """The temperature T minimising the NLL of softmax(logits / T) over labelled logits (the validation split).

    The NLL is convex in 1/T, so it has one minimum along log T: Brent's bounded method on log T (T > 0 by
    construction) finds it in about 30 evaluations over the cached logits, without a forward pass."""
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=int)
    mistakes = int(np.sum(z.argmax(axis=1) != y)) if len(y) else 0
    before = logits_nll(z, y, 1.0)
    if mistakes == 0:  # every right answer gains from a lower T: the "fit" would run into the lower bound
        return TemperatureFit(1.0, before, before, True, 0)
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    res = minimize_scalar(lambda u: logits_nll(z, y, math.exp(u)), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-6})
    u = float(res.x)
    at_bound = min(u - lo, hi - u) < 1e-3
    t = math.exp(u)
    return TemperatureFit(t, before, logits_nll(z, y, t), at_bound, mistakes)


def _top1(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 confidence, whether the top-1 class is right) per row."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    if len(labels) == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    pred = probs.argmax(axis=1)
    return probs[np.arange(len(pred)), pred], pred == labels


def nll(probs, labels) -> float:
    """Mean -log p(true class), probabilities clipped at NLL_EPS (scikit-learn's log_loss rule)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    if len(labels) == 0:
        return 0.0
    p = np.clip(probs[np.arange(len(labels)), labels], NLL_EPS, 1.0)
    return float(np.mean(-np.log(p)))


def brier(probs, labels) -> float:
    """The multi-class Brier score (Brier 1950): mean over images of sum_k (p_k - y_k)^2, y one-hot; 0 is perfect,
    2 the worst (all the mass on one wrong class)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    if len(labels) == 0:
        return 0.0
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


@dataclass(frozen=True)
class Bin:
    lower: float
    upper: float  # the bin is (lower, upper]; the first one holds confidence 0 too
    images: int
    accuracy: float  # 0 for an empty bin
    confidence: float  # mean top-1 confidence in the bin; 0 for an empty bin


def reliability_bins(probs, labels, bins: int = ECE_BINS) -> list[Bin]:
    """Equal-width bins (i/bins, (i+1)/bins] of the top-1 confidence, as in Guo et al.'s reference code."""
    conf, right = _top1(probs, labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # (lo, hi]: index = ceil(conf * bins) - 1, computed against the edges so 0.2 lands where 0.2 <= edge says
    index = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    found = []
    for i in range(bins):
        mask = index == i
        n = int(mask.sum())
        found.append(Bin(float(edges[i]), float(edges[i + 1]), n, float(right[mask].mean()) if n else 0.0,
                         float(conf[mask].mean()) if n else 0.0))
    return found


def ece(probs, labels, bins: int = ECE_BINS) -> float:
    """Expected calibration error: sum over bins of (images in bin / n) * |accuracy - mean confidence|."""
    n = len(np.asarray(labels))
    if n == 0:
        return 0.0
    return float(sum(b.images / n * abs(b.accuracy - b.confidence) for b in reliability_bins(probs, labels, bins)))


def _round_down(t: float) -> float:
    scale = 10 ** THRESHOLD_DECIMALS
    return math.floor(t * scale + 1e-9) / scale


def _covered(conf, right, t: float) -> dict:
    """The row of the table at threshold t: images answered (confidence >= t), their share and accuracy."""
    keep = conf >= t
    n = int(keep.sum())
    return {"threshold": float(t), "coverage": n / len(conf) if len(conf) else 0.0,
            "accuracy": float(right[keep].mean()) if n else None, "images": n}


def coverage_threshold(probs, coverage: float) -> float:
    """The highest threshold (rounded down to THRESHOLD_DECIMALS) that still answers at least `coverage` of the
    images: the confidence of the ceil(coverage * n)-th most confident image."""
    conf = np.sort(np.asarray(probs, dtype=np.float64).max(axis=1))[::-1]
    if len(conf) == 0:
        return 0.0
    k = max(1, math.ceil(coverage * len(conf) - 1e-9))
    return _round_down(float(conf[k - 1]))


def risk_coverage(probs, labels, thresholds=RISK_THRESHOLDS, coverages=RISK_COVERAGES) -> list[dict]:
    """What `predict --min-confidence t` would do on these images, for the fixed thresholds and those where the
    coverage crosses each of `coverages`: [{threshold, coverage, accuracy, images}], sorted by threshold. accuracy
    is None where no image is answered."""
    conf, right = _top1(probs, labels)
    ts = set(float(t) for t in thresholds) | {coverage_threshold(probs, c) for c in coverages if len(conf)}
    return [_covered(conf, right, t) for t in sorted(ts)]


def target_threshold(probs, labels, accuracy: float) -> dict:
    """The lowest threshold whose answered images reach `accuracy` (so the most coverage), as {accuracy,
    threshold, coverage, images, reachable}; threshold None and coverage 0 when no threshold reaches it."""
    conf, right = _top1(probs, labels)
    order = np.argsort(-conf, kind="stable")
    c, r = conf[order], right[order]
    hits = np.cumsum(r)
    counts = np.arange(1, len(c) + 1)
    # Images of equal confidence are answered together: only the last index of each run of ties is a choice.
    last = np.flatnonzero(np.append(c[1:] != c[:-1], True)) if len(c) else np.zeros(0, dtype=int)
    ok = last[hits[last] / counts[last] >= accuracy - 1e-12]
    if len(ok) == 0:
        return {"accuracy": accuracy, "threshold": None, "coverage": 0.0, "images": 0, "reachable": False}
    exact = float(c[ok.max()])
    t = _round_down(exact)
    row = _covered(conf, right, t)
    if row["accuracy"] is None or row["accuracy"] < accuracy - 1e-12:  # rounding down let in a wrong answer
        t = exact
        row = _covered(conf, right, t)
    return {"accuracy": accuracy, "threshold": t, "coverage": row["coverage"], "images": row["images"],
            "reachable": True}
