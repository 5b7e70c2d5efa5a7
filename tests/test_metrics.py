import numpy as np
import pytest

from imgclass_cli.report.metrics import compute_report


def test_report_matches_hand_computed_values():
    y = [0, 0, 1, 1, 2, 2]
    pred = [0, 1, 1, 1, 2, 0]
    probs = np.eye(3)[pred] * 0.8 + 0.2 / 3
    r = compute_report(y, probs, ["a", "b", "c"])
    assert r.accuracy == pytest.approx(4 / 6)
    assert r.per_class["b"].precision == pytest.approx(2 / 3) and r.per_class["b"].recall == 1.0
    assert r.per_class["c"].recall == pytest.approx(0.5)
    assert r.confusion_matrix == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert r.recall_macro == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert r.balanced_accuracy == pytest.approx(r.recall_macro)
    assert r.top_k_accuracy["top_1"] == pytest.approx(4 / 6)
    d = r.to_dict()
    assert d["per_class"]["a"]["support"] == 2 and d["num_samples"] == 6


def test_two_classes_and_missing_classes():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    r = compute_report([0, 1, 1], probs, ["ants", "bees"])
    assert r.accuracy == pytest.approx(2 / 3) and r.top_k_accuracy == {"top_1": pytest.approx(2 / 3)}
    only_one = compute_report([1, 1], probs[:2], ["ants", "bees"])
    assert only_one.per_class["ants"].support == 0 and only_one.recall_macro == pytest.approx(0.5)
