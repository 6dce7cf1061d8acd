"""FixMatch: distribution alignment by hand, a smoke fit, and the loop's learning rate."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from libml import data, models, train
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


def _blob_stream(tmp_path, batch_size=16, uratio=2):
    (x, y), _ = fakes.write_fashion_mnist(str(tmp_path), 12, 1)
    x = x[..., None]
    labeled = data.Records(x[:40], y[:40], np.arange(40))
    return data.train_dataset(labeled, x, batch_size, uratio, seed=1)


def test_smoke_fit_loss_decreases_and_ema_differs(tmp_path):
    keras.utils.set_random_seed(0)
    model = FixMatch(
        lambda: models.build_model('cnn_small', 10, (28, 28, 1)),
        10,
        p_target=np.full(10, 0.1),
        ema_decay=0.9,
    )
    model.compile(optimizer=train.make_optimizer(0.03, 60))
    history = model.fit(_blob_stream(tmp_path), epochs=4, steps_per_epoch=15, verbose=0)
    losses = history.history['loss/total']
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0] * 0.8, losses
    assert int(model.ema_updates.numpy()) == 60
    assert int(model.p_model_index.numpy()) == 60
    raw, ema = model.net.trainable_variables, model.ema_net.trainable_variables
    assert any(not np.allclose(r.numpy(), e.numpy()) for r, e in zip(raw, ema, strict=True))
    # Moving statistics are copied to the EMA model, not averaged.
    for r, e in zip(
        model.net.non_trainable_variables, model.ema_net.non_trainable_variables, strict=True
    ):
        np.testing.assert_array_equal(r.numpy(), e.numpy())


def test_half_cosine_schedule():
    schedule = train.HalfCosine(0.03, 1000, level=7)
    assert float(schedule(0)) == pytest.approx(0.03)
    assert float(schedule(1000)) == pytest.approx(0.03 * np.cos(7 * np.pi / 16), rel=1e-5)
    assert float(train.HalfCosine(0.03, 1000)(1000)) == pytest.approx(0.0294, abs=1e-4)


def test_train_loop_resumes_from_checkpoint(tmp_path):
    keras.utils.set_random_seed(0)
    stream = _blob_stream(tmp_path / 'data', batch_size=8)
    test_images = np.zeros((4, 28, 28, 1), np.uint8)
    logs = []

    def run(steps):
        model = FixMatch(lambda: models.build_model('cnn_small', 10, (28, 28, 1)), 10)
        model.compile(optimizer=train.make_optimizer(0.03, 6))

        def evaluate():
            return {'acc/balanced': float(train.predict(model.ema_net, test_images)[0, 0])}

        evals = train.train(
            model, stream, steps, 2, str(tmp_path / 'run'), evaluate, log=logs.append
        )
        return model, evals

    first, evals = run(4)
    assert [e['step'] for e in evals] == [2, 4]
    second, evals = run(6)
    assert any('resumed' in line and 'step 4' in line for line in logs)
    assert [e['step'] for e in evals] == [2, 4, 6]
    assert int(second.optimizer.iterations.numpy()) == 6
    assert int(second.ema_updates.numpy()) == 6
