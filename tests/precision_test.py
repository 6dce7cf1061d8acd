"""Mixed precision (--precision=bf16): bfloat16 compute, float32 variables and logits,
and a train step whose loss and updates stay close to float32's."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from libml import models, train
from libml.algorithms import ALGORITHMS


@pytest.mark.parametrize('arch', sorted(models.ARCHS))
def test_bf16_backbone_computes_in_bfloat16_and_keeps_float32_variables(arch):
    net = models.build_model(arch, 10, (32, 32, 3), precision='bf16')
    assert {v.dtype for v in net.weights} == {'float32'}
    layers = list(models._layers(net))
    convs = [layer for layer in layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.compute_dtype == 'bfloat16' for layer in convs)
    # This project's batch norm; Keras' own in ResNet-50.
    norms = [
        layer
        for layer in layers
        if isinstance(layer, models.BatchNorm | keras.layers.BatchNormalization)
    ]
    assert norms and all(layer.compute_dtype == 'bfloat16' for layer in norms)
    logits = net(tf.zeros([2, 32, 32, 3]), training=True)
    assert logits.dtype == tf.float32
    # The global policy is left as it was.
    assert keras.config.dtype_policy().name == 'float32'
    assert models.build_model(arch, 10, (32, 32, 3)).layers[1].compute_dtype == 'float32'


def _one_step(name, precision, weights=None):
    """A fresh model of `precision` (with `weights` if given) after one train step on a
    fixed random batch: (its initial weights, initial trainable weights, the step's loss,
    trainable weights after it, moving statistics after it)."""
    keras.utils.set_random_seed(0)
    model = ALGORITHMS[name](
        lambda: models.build_model('cnn_small', 10, (28, 28, 1), precision),
        10,
        p_target=np.full(10, 0.1),
        total_steps=10,
    )
    model.compile(optimizer=train.make_optimizer(0.03, 10))
    model.optimizer.build(model.net.trainable_variables)
    if weights is not None:
        model.net.set_weights(weights)
        model.ema_net.set_weights(weights)
    rng = np.random.RandomState(0)
    batch = {
        'x_l': tf.constant(rng.uniform(-1, 1, (16, 28, 28, 1)), tf.float32),
        'y_l': tf.constant(rng.randint(0, 10, 16), tf.int64),
        'x_u': tuple(
            tf.constant(rng.uniform(-1, 1, (32, 28, 28, 1)), tf.float32)
            for _ in model.views.unlabeled
        ),
    }
    start = [v.numpy() for v in model.net.trainable_variables]
    weights = model.net.get_weights()
    loss = float(model.train_step(batch)['loss/total'])
    trainable = [v.numpy() for v in model.net.trainable_variables]
    stats = [v.numpy() for v in model.net.non_trainable_variables]
    return weights, start, loss, trainable, stats


def _cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize('name', sorted(ALGORITHMS))
def test_a_bf16_train_step_is_close_to_float32(name):
    """Tolerances, about 3x the largest deviation measured over the five algorithms
    (bfloat16 keeps 8 significant bits, a relative rounding of 2^-9): the loss within
    0.1% (measured up to 0.02%); one SGD step moves the weights by -lr * (1 + momentum)
    * gradient, so compare the moves: over all weights a cosine above 0.99 (measured
    0.995), per layer above 0.9 (0.968) and a size within 15% (0.939-1.076); moving
    statistics within 10% (3.6%)."""
    weights, start, loss32, after32, stats32 = _one_step(name, 'float32')
    _, _, loss16, after16, stats16 = _one_step(name, 'bf16', weights=weights)
    assert abs(loss16 - loss32) <= 1e-3 * abs(loss32), (loss16, loss32)
    moves32 = [(w - w0).ravel() for w0, w in zip(start, after32, strict=True)]
    moves16 = [(w - w0).ravel() for w0, w in zip(start, after16, strict=True)]
    assert _cosine(np.concatenate(moves32), np.concatenate(moves16)) > 0.99
    for d32, d16 in zip(moves32, moves16, strict=True):
        assert _cosine(d32, d16) > 0.9
        assert abs(np.linalg.norm(d16) / np.linalg.norm(d32) - 1) < 0.15
    for s32, s16 in zip(stats32, stats16, strict=True):
        np.testing.assert_allclose(s16, s32, rtol=0.1, atol=1e-3)
