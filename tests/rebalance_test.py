"""Hand-computed cases for the CReST math (paper eqs. 1 and 2)."""

import numpy as np
import pytest

from crest import rebalance

CIFAR10_LABELED = [500, 300, 180, 108, 65, 39, 24, 14, 9, 5]


def test_rates_from_labeled_counts_match_spec():
    mu = rebalance.sampling_rates(CIFAR10_LABELED, 1 / 3)
    expected = [0.215, 0.262, 0.304, 0.363, 0.427, 0.507, 0.600, 0.711, 0.843, 1.0]
    np.testing.assert_allclose(mu, expected, atol=5e-4)
    # By hand: head class gets (5/500)^(1/3), the tail (500/500)^(1/3).
    assert mu[0] == pytest.approx(0.01 ** (1 / 3))
    assert mu[3] == pytest.approx((24 / 500) ** (1 / 3))


def test_rates_from_analytic_prior_match_reference():
    prior = rebalance.analytic_prior(10, 100)
    np.testing.assert_allclose(
        prior, [0.403, 0.242, 0.145, 0.087, 0.052, 0.031, 0.019, 0.011, 0.007, 0.004], atol=6e-4
    )
    mu = rebalance.sampling_rates(prior, 1 / 3)
    expected = [0.215, 0.256, 0.303, 0.359, 0.426, 0.505, 0.599, 0.711, 0.843, 1.0]
    np.testing.assert_allclose(mu, expected, atol=5e-4)


def test_rates_follow_frequency_rank_not_class_index():
    # Class 2 is the head, class 0 the tail: rates must follow the ranks.
    mu = rebalance.sampling_rates([5, 50, 500], 1.0)
    np.testing.assert_allclose(mu, [1.0, 0.1, 0.01])


def test_alpha_zero_keeps_everything_and_negative_alpha_fails():
    np.testing.assert_array_equal(rebalance.sampling_rates(CIFAR10_LABELED, 0), np.ones(10))
    with pytest.raises(ValueError, match='alpha'):
        rebalance.sampling_rates(CIFAR10_LABELED, -0.5)
    with pytest.raises(ValueError, match='positive'):
        rebalance.sampling_rates([3, 0, 1], 0.5)


def test_temperature_schedule_g6_tmin_half():
    ts = [rebalance.temperature(g, 6, 0.5) for g in range(6)]
    np.testing.assert_allclose(ts, [1.0, 0.9, 0.8, 0.7, 0.6, 0.5])
    assert rebalance.temperature(0, 1, 0.5) == 0.5  # G = 1: no division by zero.


def test_alignment_target():
    np.testing.assert_allclose(rebalance.alignment_target([0.8, 0.2], 1.0), [0.8, 0.2])
    np.testing.assert_allclose(rebalance.alignment_target([0.8, 0.2], 0.5), [2 / 3, 1 / 3])
    np.testing.assert_allclose(rebalance.alignment_target([0.8, 0.2], 0.0), [0.5, 0.5])


def test_select_keeps_most_confident_per_predicted_class():
    probs = np.array(
        [
            [0.90, 0.10, 0.00],  # 0: class 0, conf .90
            [0.60, 0.40, 0.00],  # 1: class 0, conf .60
            [0.70, 0.20, 0.10],  # 2: class 0, conf .70
            [0.95, 0.05, 0.00],  # 3: class 0, conf .95
            [0.20, 0.80, 0.00],  # 4: class 1, conf .80
            [0.10, 0.55, 0.35],  # 5: class 1, conf .55
            [0.00, 0.10, 0.90],  # 6: class 2, conf .90
            [0.30, 0.00, 0.70],  # 7: class 2, conf .70
        ]
    )
    # Class 0: floor(4 * .5) = 2 -> rows 3, 0. Class 1: floor(2 * .4) = 0.
    # Class 2: floor(2 * 1) = 2 -> rows 6, 7.
    picks = rebalance.select_pseudo_labels(probs, [0.5, 0.4, 1.0])
    np.testing.assert_array_equal(picks, [3, 0, 6, 7])
    # The same from each row's predicted class and confidence alone.
    picks = rebalance.select_by_confidence(probs.argmax(1), probs.max(1), [0.5, 0.4, 1.0])
    np.testing.assert_array_equal(picks, [3, 0, 6, 7])


def test_select_with_rate_one_keeps_all():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=50)
    picks = rebalance.select_pseudo_labels(probs, np.ones(4))
    np.testing.assert_array_equal(np.sort(picks), np.arange(50))


def test_class_weights_by_hand():
    # Effective numbers with beta = 0.5: (1 - 0.5^4) / 0.5 = 1.875 and (1 - 0.5) / 0.5 = 1;
    # weights 1 / 1.875 and 1, normalised to mean 1.
    w = rebalance.class_weights([4, 1], 'class_balanced', beta=0.5)
    np.testing.assert_allclose(w, np.array([1 / 1.875, 1.0]) / ((1 / 1.875 + 1) / 2))
    np.testing.assert_allclose(rebalance.class_weights([4, 1], 'inverse_frequency'), [0.4, 1.6])
    assert rebalance.class_weights([4, 1], 'none') is None
    # beta -> 1 tends to inverse frequency, beta = 0 to equal weights.
    np.testing.assert_allclose(
        rebalance.class_weights([500, 5], 'class_balanced', beta=1 - 1e-9),
        rebalance.class_weights([500, 5], 'inverse_frequency'),
        rtol=1e-4,
    )
    np.testing.assert_allclose(rebalance.class_weights([500, 5], 'class_balanced', beta=0.0), 1)
