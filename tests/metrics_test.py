"""Per-class metrics and the minority bias on hand examples."""

import numpy as np
import pytest

from libml import metrics


def test_classification_report_by_hand():
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 0, 1, 1, 0, 0])
    probs = np.eye(3)[predicted]
    report = metrics.classification_report(labels, probs)
    # Recall: 3/4, 1/2, 0/1. Precision: 3/5, 1/2, class 2 never predicted -> 0.
    np.testing.assert_allclose(report['recall'], [0.75, 0.5, 0.0])
    np.testing.assert_allclose(report['precision'], [0.6, 0.5, 0.0])
    assert report['balanced_accuracy'] == pytest.approx((0.75 + 0.5 + 0) / 3)
    assert report['accuracy'] == pytest.approx(4 / 7)
    assert report['predicted'] == [5, 2, 0]


def test_mean_of_last_five():
    assert metrics.mean_of_last([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]) == pytest.approx(0.5)
    assert metrics.mean_of_last([0.4]) == pytest.approx(0.4)
    with pytest.raises(ValueError):
        metrics.mean_of_last([])


def test_mean_of_last_five_per_class():
    recalls = [[0.0, 1.0], [0.1, 0.9], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6], [0.5, 0.5]]
    # Drops the first evaluation: (0.1 + ... + 0.5) / 5 = 0.3, (0.9 + ... + 0.5) / 5 = 0.7.
    assert metrics.mean_of_last(recalls) == pytest.approx([0.3, 0.7])


def test_logit_adjustment_by_hand():
    # [0.6, 0.4] / [0.8, 0.2] = [0.75, 2], normalised: [3/11, 8/11]: the tail class wins.
    adjusted = metrics.logit_adjusted([[0.6, 0.4]], [0.8, 0.2])
    np.testing.assert_allclose(adjusted, [[3 / 11, 8 / 11]])
    np.testing.assert_allclose(
        metrics.logit_adjusted([[0.6, 0.4]], [0.8, 0.2], tau=0), [[0.6, 0.4]]
    )
    # The same as subtracting tau * log prior from the logits.
    logits = np.array([[1.0, -0.5, 2.0]])
    prior = np.array([0.7, 0.2, 0.1])
    probs = np.exp(logits) / np.exp(logits).sum()
    shifted = logits - 0.5 * np.log(prior)
    np.testing.assert_allclose(
        metrics.logit_adjusted(probs, prior, tau=0.5), np.exp(shifted) / np.exp(shifted).sum()
    )


# Four classes of 100, 40, 16 and 6 labeled images: the minority half is c and d.
COUNTS, NAMES = [100, 40, 16, 6], ['a', 'b', 'c', 'd']
RECALL, PRECISION = [0.9, 0.8, 0.5, 0.3], [0.6, 0.8, 0.9, 1.0]


def test_minority_bias_is_precision_minus_recall_on_the_smaller_half():
    bias = metrics.minority_bias(COUNTS, RECALL, PRECISION, [50, 20, 10, 5], NAMES)
    assert bias['minority_precision'] == pytest.approx(0.95)
    assert bias['minority_recall'] == pytest.approx(0.4)
    assert bias['bias'] == pytest.approx(0.55)
    assert bias['smallest_class'] == 'd' and bias['smallest_recall'] == 0.3
    assert bias['smallest_precision'] == 1.0 and bias['never_predicted'] == []
    bias = metrics.minority_bias(COUNTS, RECALL, PRECISION, [60, 25, 0, 0], NAMES)
    assert bias['minority_precision'] is None and bias['never_predicted'] == ['c', 'd']
    assert bias['bias'] == pytest.approx(1 - 0.4)  # Precision counts as 1.
    assert bias['smallest_precision'] is None
