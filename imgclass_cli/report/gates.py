"""Quality gates for `evaluate --fail-under`: parse `accuracy=0.9,f1_macro=0.85` and check a metrics report."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from imgclass_cli.errors import GateFailed, ImgclassError
from imgclass_cli.report.metrics import METRIC_KEYS

PER_CLASS_FIELDS = ("precision", "recall", "f1")


@dataclass(frozen=True)
class Gate:
    key: str  # a dotted key of metrics.json: accuracy, top_k_accuracy.top_3, per_class.ants.recall
    threshold: float


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    value: float

    @property
    def passed(self) -> bool:
        return self.value >= self.gate.threshold

    @property
    def shortfall(self) -> float:
        return max(0.0, self.gate.threshold - self.value)


def known_keys(class_names: list[str], top_ks=(1, 3, 5)) -> list[str]:
    """Every numeric key of metrics.json a gate may name, for a model with these classes."""
    keys = list(METRIC_KEYS)
    keys += [f"top_k_accuracy.top_{k}" for k in top_ks if k < len(class_names)]
    keys += [f"per_class.{c}.{f}" for c in class_names for f in PER_CLASS_FIELDS]
    return keys


def _canonical(key: str) -> str:
    """Accept the names the table prints too: top_3, top_3_accuracy -> top_k_accuracy.top_3."""
    if key.startswith("top_") and not key.startswith("top_k_accuracy"):
        key = "top_k_accuracy." + key.removesuffix("_accuracy")
    return key


def parse(spec: str, class_names: list[str], source: str = "--fail-under") -> list[Gate]:
    """`accuracy=0.9,f1_macro=0.85` -> gates; an unknown key or a bad number is a usage error with a suggestion.
    `source` names where the spec came from in messages (the option, or the environment variable that set it)."""
    known = known_keys(class_names)
    gates = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ImgclassError(f"{source} {part!r}: expected METRIC=THRESHOLD, e.g. accuracy=0.9,f1_macro=0.85")
        try:
            threshold = float(value)
        except ValueError:
            raise ImgclassError(f"{source} {part!r}: {value.strip()!r} is not a number") from None
        if not 0.0 <= threshold <= 1.0:
            raise ImgclassError(f"{source} {part!r}: thresholds are fractions between 0 and 1; got {value.strip()}")
        canonical = _canonical(key)
        if canonical not in known:
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise ImgclassError(
                f"{source}: unknown metric {key!r}; {hint}known metrics: {', '.join(known[: len(METRIC_KEYS) + 3])}, "
                "per_class.CLASS.precision|recall|f1"
            )
        gates.append(Gate(canonical, threshold))
    if not gates:
        raise ImgclassError(f"{source}: no METRIC=THRESHOLD given, e.g. accuracy=0.9")
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
    """Raise GateFailed (exit 3) naming every metric below its threshold and by how much."""
    failed = [r for r in results if not r.passed]
    if failed:
        parts = [
            f"{r.gate.key} {r.value:.4f} < {r.gate.threshold:.4f} (short by {r.shortfall:.4f})" for r in failed
        ]
        raise GateFailed("quality gate failed: " + "; ".join(parts))
