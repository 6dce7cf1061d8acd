"""Hand-computed cases of the losses and operations the algorithms share."""

import functools
import math

import numpy as np
import pytest
import tensorflow as tf

from libml.algorithms import ops

# float32 arithmetic against float64 expectations.
assert_close = functools.partial(np.testing.assert_allclose, rtol=1e-6)

# softmax([0, ln 3]) = [1/4, 3/4]
LOGITS = tf.constant([[0.0, math.log(3.0)]])


def test_cross_entropy():
    assert_close(ops.cross_entropy(tf.constant([1]), LOGITS), [-math.log(0.75)])
    assert_close(ops.cross_entropy(tf.constant([0]), LOGITS), [math.log(4.0)])


def test_soft_cross_entropy():
    expected = -(0.6 * math.log(0.25) + 0.4 * math.log(0.75))  # 0.94685
    assert_close(ops.soft_cross_entropy(tf.constant([[0.6, 0.4]]), LOGITS), [expected])


def test_squared_error_is_a_mean_over_classes():
    probs = tf.constant([[0.25, 0.75], [0.5, 0.5]])
    targets = tf.constant([[1.0, 0.0], [0.5, 0.5]])
    assert_close(ops.squared_error(targets, probs), [0.5625, 0.0])


def test_sharpen():
    # [0.6, 0.4]^2 = [0.36, 0.16], / 0.52
    assert_close(ops.sharpen(tf.constant([[0.6, 0.4]]), 0.5), [[0.36 / 0.52, 0.16 / 0.52]])
    assert_close(ops.sharpen(tf.constant([[0.6, 0.4]]), 1.0), [[0.6, 0.4]])


def test_mixup_mixes_images_and_targets_with_the_same_weights():
    x = tf.constant([1.0, 3.0, 5.0])[:, None, None, None] * tf.ones([3, 2, 2, 1])
    targets = tf.eye(3)
    x_mix, t_mix = ops.mixup(x, targets, tf.constant([0.5, 0.75, 1.0]), tf.constant([2, 0, 1]))
    # 0.5 * 1 + 0.5 * 5 = 3; 0.75 * 3 + 0.25 * 1 = 2.5; 1.0 * 5 = 5
    assert_close(x_mix[:, 0, 0, 0], [3.0, 2.5, 5.0])
    assert x_mix.shape == x.shape
    assert_close(t_mix, [[0.5, 0, 0.5], [0.25, 0.75, 0], [0, 0, 1]])


def test_mixup_draw_weights_follow_max_of_beta():
    n, beta = 100_000, 0.75
    weights, partners = ops.mixup_draw(n, beta, tf.constant([3, 0], tf.int64))
    weights = weights.numpy()
    assert weights.min() >= 0.5 and weights.max() <= 1.0
    assert sorted(partners.numpy().tolist()) == list(range(n))
    # E[max(l, 1 - l)] for l ~ Beta(0.75, 0.75): with l = sin^2(u), u in (0, pi/2), the
    # density becomes 2 (sin u cos u)^(2 beta - 1) / B(beta, beta), free of singularities.
    u = (np.arange(200_000) + 0.5) * (math.pi / 2) / 200_000
    lam = np.sin(u) ** 2
    density = 2 * (np.sin(u) * np.cos(u)) ** (2 * beta - 1)
    norm = math.gamma(beta) ** 2 / math.gamma(2 * beta)
    expected = np.sum(np.maximum(lam, 1 - lam) * density) * (math.pi / 2) / 200_000 / norm
    assert weights.mean() == pytest.approx(expected, abs=3e-3)
    # The median of max(l, 1 - l) is the 3/4 quantile of l; a Beta(1, 1) would give 0.75.
    assert np.median(weights) > 0.76


def test_mixup_draw_is_a_function_of_its_seed():
    seed = tf.constant([5, 17], tf.int64)
    first = ops.mixup_draw(64, 0.75, seed)
    for a, b in zip(first, ops.mixup_draw(64, 0.75, seed), strict=True):
        np.testing.assert_array_equal(a, b)
    other = ops.mixup_draw(64, 0.75, tf.constant([5, 18], tf.int64))
    assert not np.array_equal(first[0], other[0]) and not np.array_equal(first[1], other[1])


@pytest.mark.parametrize('step,length,expected', [(0, 10, 0.0), (5, 10, 0.5), (20, 10, 1.0)])
def test_linear_rampup(step, length, expected):
    assert float(ops.linear_rampup(step, length)) == pytest.approx(expected)


def test_linear_rampup_of_zero_length_is_full_weight():
    assert float(ops.linear_rampup(0, 0)) == 1.0
