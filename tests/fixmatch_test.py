"""FixMatch by hand: distribution alignment and one whole train step."""

import numpy as np
import pytest
import tensorflow as tf

from libml import models, train
from libml.algorithms import FixMatch
from tests import fakes


def _tiny_fixmatch(**kwargs):
    return FixMatch(lambda: models.build_model('cnn_small', 2, (28, 28, 1)), 2, **kwargs)


def test_alignment_by_hand():
    model = _tiny_fixmatch(p_target=[0.25, 0.75], da_history=2)
    # p_model starts uniform: q~ = Normalize(q * target) = [.15, .3] / .45.
    np.testing.assert_allclose(model.align(tf.constant([[0.6, 0.4]])), [[1 / 3, 2 / 3]], atol=1e-5)

    def push(mean):
        for var, value in model.p_model_update(tf.constant([mean, mean])):
            var.assign(value)

    push([0.8, 0.2])  # FIFO: [[.8, .2], [.5, .5]] -> p_model = [.65, .35]
    np.testing.assert_allclose(model.p_model(), [0.65, 0.35], atol=1e-6)
    q = (0.5 * 0.25 / 0.65, 0.5 * 0.75 / 0.35)
    expected = np.array(q) / sum(q)
    np.testing.assert_allclose(model.align(tf.constant([[0.5, 0.5]])), [expected], atol=1e-5)
    push([0.2, 0.8])
    push([0.4, 0.6])  # Overwrites the oldest entry, [.8, .2].
    np.testing.assert_allclose(model.p_model(), [0.3, 0.7], atol=1e-6)


def test_no_alignment_is_identity():
    model = _tiny_fixmatch()
    probs = tf.constant([[0.9, 0.1], [0.3, 0.7]])
    np.testing.assert_allclose(model.align(probs), probs)


def test_train_step_by_hand():
    """One step on a net small enough to compute in NumPy: the mask is tested on the
    aligned confidence, the unlabeled loss divides by all unlabeled images, and weight
    decay covers conv and dense weights but not batch norm."""
    wd, wu, target = 5e-4, 2.0, np.array([0.2, 0.8])
    rng = np.random.default_rng(1)
    x_l, x_w, x_s = (rng.uniform(-1, 1, (n, 2, 2, 1)).astype(np.float32) for n in (2, 6, 6))
    y_l = np.array([0, 1])
    model = FixMatch(fakes.tiny_net, 2, p_target=target, wd=wd, wu=wu)

    # One training-mode pass over [x_l; x_w; x_s].
    logits, _ = fakes.tiny_net_forward(model.net, np.concatenate([x_l, x_w, x_s]))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    aligned = probs[2:8] * target / 0.5  # p_model starts uniform
    aligned /= aligned.sum(1, keepdims=True)
    # A threshold between the aligned confidences, which the raw ones do not all reach.
    confidence = np.sort(aligned.max(1))
    threshold = float((confidence[2] + confidence[3]) / 2)
    assert np.sum(probs[2:8].max(1) >= threshold) != np.sum(aligned.max(1) >= threshold)
    mask = aligned.max(1) >= threshold
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    loss_xe = -np.mean(log_p[np.arange(2), y_l])
    loss_xeu = -np.sum(log_p[8:][np.arange(6), aligned.argmax(1)] * mask) / 6
    loss_wd = fakes.tiny_net_l2(model.net)

    model.threshold = threshold
    model.compile(optimizer=train.make_optimizer(0.03, 10))
    result = model.train_step(dict(x_l=x_l, y_l=y_l, x_u=(tf.constant(x_w), tf.constant(x_s))))
    assert float(result['monitor/mask']) == pytest.approx(mask.mean())
    assert float(result['loss/xe']) == pytest.approx(loss_xe, rel=1e-4)
    assert float(result['loss/xeu']) == pytest.approx(loss_xeu, rel=1e-4)
    assert float(result['loss/wd']) == pytest.approx(loss_wd, rel=1e-5)
    assert float(result['loss/total']) == pytest.approx(
        loss_xe + wu * loss_xeu + wd * loss_wd, rel=1e-4
    )
    # Alignment history: the raw weak-view mean prediction, not the aligned one.
    np.testing.assert_allclose(model.p_model_history[0], probs[2:8].mean(0), rtol=1e-5)
