"""Every registered algorithm: its declared hyperparameters, and a short fit through the
driver's training loop (`train.train`) that learns, keeps an EMA copy and resumes."""

import inspect

import keras
import numpy as np
import pytest

from libml import models, pipeline, records, train
from libml.algorithms import ALGORITHMS
from libml.algorithms.base import SemiSupervised
from tests import fakes

NAMES = sorted(ALGORITHMS)


@pytest.mark.parametrize('name', NAMES)
def test_hyperparameters_are_the_constructor_arguments(name):
    algorithm = ALGORITHMS[name]
    base = set(inspect.signature(SemiSupervised.__init__).parameters)
    own = set(inspect.signature(algorithm.__init__).parameters) - base
    assert own == set(algorithm.HPARAMS), 'every own argument is declared, and only those'
    for hparam, default in algorithm.hparam_defaults().items():
        spec = algorithm.HPARAMS[hparam]
        assert spec.help and spec.allowed, hparam
        assert spec.check(default), f'{name}.{hparam} default {default} fails its own check'


def _build(name, steps):
    return ALGORITHMS[name](
        lambda: models.build_model('cnn_small', 10, (28, 28, 1)),
        10,
        p_target=np.full(10, 0.1),
        ema_decay=0.9,
        total_steps=steps,
    )


def _stream(folder, model, batch_size=16, uratio=2):
    (x, y), _ = fakes.write_fashion_mnist(str(folder), 12, 1)
    x = x[..., None]
    labeled = records.Records(x[:40], y[:40], np.arange(40))
    return pipeline.train_dataset(labeled, x, batch_size, uratio, model.views, seed=1)


def _train(model, stream, steps, eval_every, workdir, logs=None):
    model.compile(optimizer=train.make_optimizer(0.03, steps))
    test_images = np.zeros((4, 28, 28, 1), np.uint8)

    def evaluate():
        return {'acc/balanced': float(train.predict(model.ema_net, test_images)[0, 0])}

    log = logs.append if logs is not None else lambda _: None
    return train.train(model, stream, steps, eval_every, str(workdir), evaluate, log=log)


@pytest.mark.parametrize('name', NAMES)
def test_fit_learns_and_keeps_an_ema_copy(name, tmp_path):
    keras.utils.set_random_seed(0)
    model = _build(name, 60)
    evals = _train(model, _stream(tmp_path / 'data', model), 60, 15, tmp_path / 'run')
    assert [e['step'] for e in evals] == [15, 30, 45, 60]
    for key in model.TRACKED:
        assert all(np.isfinite(e[key]) for e in evals), key
    # The supervised loss falls (the total may rise with a ramp-up). MixMatch's, a cross-
    # entropy against mixed-up targets, falls slowest: to 0.80-0.85 of its start in
    # seven tries (augmentation draws vary from run to run).
    xe = [e['loss/xe'] for e in evals]
    assert np.mean(xe[2:]) < 0.95 * np.mean(xe[:2]), xe
    assert int(model.ema_updates.numpy()) == 60
    # The alignment history follows the unlabeled predictions, where there are any.
    assert int(model.p_model_index.numpy()) == (60 if model.views.unlabeled else 0)
    raw, ema = model.net.trainable_variables, model.ema_net.trainable_variables
    assert any(not np.allclose(r.numpy(), e.numpy()) for r, e in zip(raw, ema, strict=True))
    # Moving statistics are copied to the EMA model, not averaged.
    for r, e in zip(
        model.net.non_trainable_variables, model.ema_net.non_trainable_variables, strict=True
    ):
        np.testing.assert_array_equal(r.numpy(), e.numpy())


@pytest.mark.parametrize('name', NAMES)
def test_train_loop_resumes_from_checkpoint(name, tmp_path):
    keras.utils.set_random_seed(0)
    logs = []
    first = _build(name, 6)
    stream = _stream(tmp_path / 'data', first, batch_size=8)
    evals = _train(first, stream, 4, 2, tmp_path / 'run', logs)
    assert [e['step'] for e in evals] == [2, 4]
    assert not any('resumed' in line for line in logs)

    # A fresh model restored at step 4 holds exactly the first one's state: raw and EMA
    # weights, moving statistics, alignment history and step counters.
    restored = _build(name, 6)
    _train(restored, stream, 4, 2, tmp_path / 'run', logs)
    assert any('resumed' in line and 'step 4' in line for line in logs)
    assert len(restored.weights) == len(first.weights)
    for a, b in zip(first.weights, restored.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)

    again = _build(name, 6)
    evals = _train(again, stream, 6, 2, tmp_path / 'run', logs)
    assert [e['step'] for e in evals] == [2, 4, 6]
    assert int(again.optimizer.iterations.numpy()) == 6
    assert int(again.ema_updates.numpy()) == 6


def test_keras_fit_and_evaluate_work_on_one_device(tmp_path):
    """The driver runs its own loop; a user may still call fit() and evaluate()."""
    model = _build('fixmatch', 4)
    stream = _stream(tmp_path, model)
    model.compile(optimizer=train.make_optimizer(0.03, 4))
    history = model.fit(stream, steps_per_epoch=2, epochs=1, verbose=0)
    assert np.isfinite(history.history['loss/total'][-1])
    assert int(model.optimizer.iterations.numpy()) == 2
    x = np.zeros((6, 28, 28, 1), np.float32)
    # The EMA model's accuracy: it gives every all-zero image one class, right for 2 of 6.
    p = int(np.argmax(model.ema_net(x[:1], training=False)))
    y = np.array([p, p] + [(p + 1) % 10] * 4)
    found = model.evaluate(x, y, batch_size=3, verbose=0, return_dict=True)
    assert found['acc/ema'] == pytest.approx(2 / 6)
