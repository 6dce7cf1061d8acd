"""MixMatch by hand: the label guess, the losses, and one whole train step on a net small
enough to compute in NumPy, including what batch norm sees of the mixed batch."""

import math

import numpy as np
import pytest
import tensorflow as tf

from libml import models, pipeline, train
from libml.algorithms import MixMatch, ops
from tests import fakes


def _identity_net():
    """logits = x for 2-vectors: a dense layer with identity kernel and zero bias."""
    import keras

    net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    net.set_weights([np.eye(2, dtype=np.float32), np.zeros(2, np.float32)])
    return net


def test_label_guess_averages_views_then_aligns_then_sharpens():
    model = MixMatch(_identity_net, 2, K=2, T=0.5, p_target=[0.25, 0.75], total_steps=10)
    # Views: softmax [1/4, 3/4] and [1/2, 1/2]; mean [3/8, 5/8]. p_model starts uniform,
    # so alignment gives Normalize([3/8 * 1/4, 5/8 * 3/4]) = [1/6, 5/6]; sharpening with
    # T = 1/2 squares and renormalises: [1/36, 25/36] / (26/36) = [1/26, 25/26].
    views = (tf.constant([[0.0, math.log(3.0)]]), tf.constant([[0.0, 0.0]]))
    guess, raw = model.guess_labels(views)
    np.testing.assert_allclose(raw, [[3 / 8, 5 / 8]], rtol=1e-6)
    np.testing.assert_allclose(guess, [[1 / 26, 25 / 26]], rtol=1e-5)


def test_losses_soft_cross_entropy_on_labeled_squared_error_on_unlabeled():
    model = MixMatch(_identity_net, 2, total_steps=10)
    logits = tf.constant([[0.0, math.log(3.0)]] * 3)  # softmax [1/4, 3/4] on every row
    targets = tf.constant([[0.6, 0.4], [1.0, 0.0], [0.25, 0.75]])
    loss_xe, loss_xeu = model.losses(logits, targets, y_l=tf.constant([0]))
    assert float(loss_xe) == pytest.approx(-(0.6 * math.log(0.25) + 0.4 * math.log(0.75)))
    # Rows 2 and 3: mean over classes of the squared error, (0.5625 + 0) / 2.
    assert float(loss_xeu) == pytest.approx(0.5625 / 2)


def test_views_follow_k():
    model = MixMatch(_identity_net, 2, K=3, total_steps=10)
    assert model.views == pipeline.Views('weak', ('weak', 'weak', 'weak'))
    assert MixMatch(_identity_net, 2, total_steps=10).views.unlabeled == ('weak', 'weak')
    with pytest.raises(ValueError, match='needs total_steps'):
        MixMatch(_identity_net, 2)


def test_train_step_by_hand(monkeypatch):
    """Mixup weights and partners fixed; everything else computed in NumPy."""
    n_l, n_u, k, wu, wd = 2, 2, 2, 75.0, 5e-4
    weights = np.array([0.7, 0.9, 0.6, 1.0, 0.5, 0.8], np.float32)
    partners = np.array([3, 0, 5, 1, 2, 4], np.int32)
    draws = []

    def fixed_draw(n, beta, seed):
        draws.append((int(n), beta, seed.numpy().tolist()))
        return weights, partners

    monkeypatch.setattr(ops, 'mixup_draw', fixed_draw)
    model = MixMatch(
        lambda: fakes.tiny_net(bn_momentum=0.5), 2, K=k, wu=wu, rampup=0.0, wd=wd, total_steps=10
    )
    model.compile(optimizer=train.make_optimizer(0.03, 10))
    initial = model.net.get_weights()
    rng = np.random.default_rng(0)
    x_l = rng.uniform(-1, 1, (n_l, 2, 2, 1)).astype(np.float32)
    y_l = np.array([1, 0])
    x_u = tuple(rng.uniform(-1, 1, (n_u, 2, 2, 1)).astype(np.float32) for _ in range(k))

    # Label guess: one training-mode pass over both views.
    logits_u, (mean_g, var_g) = fakes.tiny_net_forward(model.net, np.concatenate(x_u))
    probs_u = np.exp(logits_u) / np.exp(logits_u).sum(1, keepdims=True)
    guess = np.mean(np.split(probs_u, k), axis=0) ** 2  # T = 0.5, no alignment
    guess /= guess.sum(1, keepdims=True)
    # Mixup of [labeled; view 1; view 2] with [one-hot; guess; guess].
    x = np.concatenate([x_l, *x_u])
    t = np.concatenate([np.eye(2)[y_l], guess, guess])
    w = weights.astype(np.float64)
    x_mix = w[:, None, None, None] * x + (1 - w[:, None, None, None]) * x[partners]
    t_mix = w[:, None] * t + (1 - w[:, None]) * t[partners]
    # One training-mode pass over the whole mixed batch.
    logits, (mean_m, var_m) = fakes.tiny_net_forward(model.net, x_mix)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    loss_xe = -np.mean(np.sum(t_mix[:n_l] * log_p[:n_l], 1))
    loss_xeu = np.mean((t_mix[n_l:] - np.exp(log_p[n_l:])) ** 2)
    loss_wd = fakes.tiny_net_l2(model.net)

    result = model.train_step(dict(x_l=tf.constant(x_l), y_l=tf.constant(y_l), x_u=x_u))
    # One draw for the whole batch, Beta(0.75, 0.75), keyed by (seed, replica, step).
    assert draws == [(n_l + k * n_u, 0.75, [0, 0])]
    assert float(result['loss/xe']) == pytest.approx(loss_xe, rel=1e-4)
    assert float(result['loss/xeu']) == pytest.approx(loss_xeu, rel=1e-4)
    assert float(result['loss/wd']) == pytest.approx(loss_wd, rel=1e-5)
    assert float(result['loss/total']) == pytest.approx(
        loss_xe + wu * loss_xeu + wd * loss_wd, rel=1e-4
    )
    # Batch norm's moving statistics (momentum 0.5, from 0 and 1): updated by the guess
    # pass, then by the mixed batch as one batch.
    bn = model.net.get_layer('bn')
    assert float(bn.moving_mean[0]) == pytest.approx(0.25 * mean_g + 0.5 * mean_m, rel=1e-4)
    assert float(bn.moving_variance[0]) == pytest.approx(
        0.25 + 0.25 * var_g + 0.5 * var_m, rel=1e-4
    )
    # Alignment history: the raw mean prediction of the views, not the sharpened guess.
    np.testing.assert_allclose(model.p_model_history[0], probs_u.mean(0), rtol=1e-5)

    # The update is the one of the loss with the guess held constant: no gradient flows
    # through the label guess.
    reference = fakes.tiny_net(bn_momentum=0.5)
    reference.set_weights(initial)
    optimizer = train.make_optimizer(0.03, 10)
    with tf.GradientTape() as tape:
        logits = reference(tf.constant(x_mix, tf.float32), training=True)
        targets = tf.constant(t_mix, tf.float32)
        loss = (
            tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(targets[:n_l], logits[:n_l]))
            + wu * tf.reduce_mean(tf.square(targets[n_l:] - tf.nn.softmax(logits[n_l:])))
            + wd
            * 0.5
            * tf.add_n([tf.reduce_sum(tf.square(v)) for v in models.l2_variables(reference)])
        )
    optimizer.apply(
        tape.gradient(loss, reference.trainable_variables), reference.trainable_variables
    )
    for ours, theirs in zip(
        model.net.trainable_variables, reference.trainable_variables, strict=True
    ):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-7)


def test_unlabeled_weight_ramps_up_linearly(monkeypatch):
    # 16 steps, rampup 1/4: the weight rises over 4 steps, 75 * k / 4 at step k.
    model = MixMatch(lambda: fakes.tiny_net(), 2, rampup=0.25, total_steps=16)
    model.compile(optimizer=train.make_optimizer(0.03, 16))
    x = np.zeros((2, 2, 2, 1), np.float32)
    batch = dict(x_l=x, y_l=np.array([0, 1]), x_u=(x, x))
    weights = []
    for _ in range(6):
        weights.append(float(model.train_step(batch)['monitor/wu']))
        for tracker in model.trackers.values():
            tracker.reset_state()
    np.testing.assert_allclose(weights, [0, 18.75, 37.5, 56.25, 75, 75])


@pytest.mark.parametrize(
    'total_steps, expected',
    [
        (2**17, 16384),  # A paper generation: 1/8 of it, MixMatch's 16,384 steps.
        (393_216, 16384),  # Table 2's one-generation baseline: still 16,384.
        (9600, 1200),  # A shorter run: 1/8 of it.
    ],
)
def test_unlabeled_weight_ramps_over_mixmatchs_16384_steps_at_most(total_steps, expected):
    model = MixMatch(lambda: fakes.tiny_net(), 2, total_steps=total_steps)
    assert model.rampup_steps == expected
