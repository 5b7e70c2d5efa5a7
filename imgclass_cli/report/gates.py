"""Quality gates of `evaluate`: `--fail-under accuracy=0.9,f1_macro=0.85` (a minimum for metrics where higher is
better) and `--fail-over ece=0.05,seen_by_run.fraction=0` (a maximum for those where lower is better), checked
against a metrics report."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

from imgclass_cli.errors import GateFailed, ImgclassError
from imgclass_cli.report.metrics import LOWER_IS_BETTER, METRIC_KEYS

PER_CLASS_FIELDS = ("precision", "recall", "f1")
UNDER, OVER = "--fail-under", "--fail-over"
# What --fail-over caps besides the calibration errors: how many evaluated images the run trained or validated on
# (counts, and their fraction of the evaluated images), and the share of the most predicted class.
SEEN_KEYS = ("seen_by_run.train", "seen_by_run.val", "seen_by_run.fraction")
COLLAPSE_KEYS = ("prediction_collapse.share",)
COUNT_KEYS = ("seen_by_run.train", "seen_by_run.val")  # thresholds are image counts, not fractions
UPPER_BOUNDS = {"nll": None, "nll_uncalibrated": None, "brier": 2.0, "brier_uncalibrated": 2.0}  # else 1.0


@dataclass(frozen=True)
class Gate:
    key: str  # a dotted key of metrics.json: accuracy, top_k_accuracy.top_3, per_class.ants.recall, ece
    threshold: float
    maximum: bool = False  # --fail-over: the value must not be above the threshold

    @property
    def option(self) -> str:
        return OVER if self.maximum else UNDER


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    value: float

    @property
    def passed(self) -> bool:
        return self.value <= self.gate.threshold if self.gate.maximum else self.value >= self.gate.threshold

    @property
    def shortfall(self) -> float:
        """How far the value is on the wrong side of the threshold (0 when it passed)."""
        gap = self.value - self.gate.threshold if self.gate.maximum else self.gate.threshold - self.value
        return max(0.0, gap)


def known_keys(class_names: list[str], top_ks=(1, 3, 5)) -> list[str]:
    """Every numeric key of metrics.json --fail-under may name (higher is better), for a model with these classes."""
    keys = [k for k in METRIC_KEYS if k not in LOWER_IS_BETTER]
    keys += [f"top_k_accuracy.top_{k}" for k in top_ks if k < len(class_names)]
    keys += [f"per_class.{c}.{f}" for c in class_names for f in PER_CLASS_FIELDS]
    return keys


def capped_keys() -> list[str]:
    """Every key --fail-over may name (lower is better)."""
    return [*LOWER_IS_BETTER, *SEEN_KEYS, *COLLAPSE_KEYS]


def _canonical(key: str) -> str:
    """Accept the names the table prints too: top_3, top_3_accuracy -> top_k_accuracy.top_3."""
    if key.startswith("top_") and not key.startswith("top_k_accuracy"):
        key = "top_k_accuracy." + key.removesuffix("_accuracy")
    return key


def _threshold(key: str, part: str, value: str, source: str) -> float:
    try:
        threshold = float(value)
    except ValueError:
        raise ImgclassError(f"{source} {part!r}: {value.strip()!r} is not a number") from None
    if key in COUNT_KEYS:
        if not (math.isfinite(threshold) and threshold >= 0 and threshold == int(threshold)):
            raise ImgclassError(f"{source} {part!r}: {key} counts images; the threshold is a whole number >= 0")
        return threshold
    upper = UPPER_BOUNDS.get(key, 1.0)
    if not (math.isfinite(threshold) and threshold >= 0 and (upper is None or threshold <= upper)):
        what = "thresholds are fractions between 0 and 1" if upper == 1.0 else \
            f"the threshold of {key} is " + ("a number >= 0" if upper is None else f"between 0 and {upper:g}")
        raise ImgclassError(f"{source} {part!r}: {what}; got {value.strip()}")
    return threshold


def _unknown(key: str, known: list[str], source: str, wrong_way: list[str], maximum: bool) -> ImgclassError:
    """The error for a key this option does not take: the other option when it is the other direction's key."""
    if _canonical(key) in wrong_way:
        better, other, rule = ("higher", UNDER, "below its minimum") if maximum else \
            ("lower", OVER, "above its maximum")
        return ImgclassError(f"{source}: {key} is better when {better}, so a gate on it fails when it is {rule}: "
                             f"write {other} {key}=THRESHOLD")
    close = difflib.get_close_matches(key, known + wrong_way, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    listed = ", ".join(known[: len(METRIC_KEYS) + 3]) if not maximum else ", ".join(known)
    tail = ", per_class.CLASS.precision|recall|f1" if not maximum else ""
    return ImgclassError(f"{source}: unknown metric {key!r}; {hint}known metrics: {listed}{tail}")


def parse(spec: str, class_names: list[str], source: str = UNDER, maximum: bool = False) -> list[Gate]:
    """`accuracy=0.9,f1_macro=0.85` -> gates (maximum=False: --fail-under; True: --fail-over, e.g. `ece=0.05`); an
    unknown key, a key of the other direction or a bad number is a usage error that says what to write instead.
    `source` names where the spec came from in messages (the option, or the environment variable that set it)."""
    known = capped_keys() if maximum else known_keys(class_names)
    wrong_way = known_keys(class_names) if maximum else capped_keys()
    gates = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key or key[-1] in "<>":
            example = "ece=0.05,nll=0.3" if maximum else "accuracy=0.9,f1_macro=0.85"
            raise ImgclassError(f"{source} {part!r}: expected METRIC=THRESHOLD, e.g. {example}")
        canonical = _canonical(key)
        if canonical not in known:
            raise _unknown(key, known, source, wrong_way, maximum)
        gates.append(Gate(canonical, _threshold(canonical, part, value, source), maximum))
    if not gates:
        raise ImgclassError(f"{source}: no METRIC=THRESHOLD given, e.g. {'ece=0.05' if maximum else 'accuracy=0.9'}")
    return gates


def lookup(report: dict, key: str) -> float:
    if key.startswith("per_class."):  # class names may contain dots
        name, _, field = key.removeprefix("per_class.").rpartition(".")
        return float(report["per_class"][name][field])
    value = report
    for part in key.split("."):
        value = value[part]
    return float(value)


def check(report: dict, gates: list[Gate]) -> list[GateResult]:
    return [GateResult(g, lookup(report, g.key)) for g in gates]


def enforce(results: list[GateResult]) -> None:
    """Raise GateFailed (exit 3) naming every metric on the wrong side of its threshold and by how much."""
    failed = [r for r in results if not r.passed]
    if failed:
        parts = [
            f"{r.gate.key} {r.value:.4f} > {r.gate.threshold:.4f} (over by {r.shortfall:.4f})" if r.gate.maximum
            else f"{r.gate.key} {r.value:.4f} < {r.gate.threshold:.4f} (short by {r.shortfall:.4f})"
            for r in failed
        ]
        raise GateFailed("quality gate failed: " + "; ".join(parts))
