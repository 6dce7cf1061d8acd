"""The training loop: learning-rate schedule, evaluation records that survive a crash,
and inference functions that do not keep finished models alive."""

import gc
import glob
import json
import os
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

from libml import train
from libml.algorithms import FixMatch
from tests import fakes


def test_half_cosine_schedule():
    schedule = train.HalfCosine(0.03, 1000, level=7)
    assert float(schedule(0)) == pytest.approx(0.03)
    assert float(schedule(1000)) == pytest.approx(0.03 * np.cos(7 * np.pi / 16), rel=1e-5)
    assert float(train.HalfCosine(0.03, 1000)(1000)) == pytest.approx(0.0294, abs=1e-4)


def _run(workdir, steps, logs=None, jit_compile=False):
    """FixMatch on the tiny net, evaluated and checkpointed every 2 steps."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (3, 4, 2, 2, 1)).astype(np.float32)
    batch = dict(x_l=x[0], y_l=np.array([0, 1, 0, 1]), x_u=(x[1], x[2]))
    model = FixMatch(fakes.tiny_net, 2)
    model.compile(optimizer=train.make_optimizer(0.03, steps))
    stream = tf.data.Dataset.from_tensors(batch).repeat()
    evaluate = lambda: {'acc/balanced': 0.5}  # noqa: E731
    log = logs.append if logs is not None else lambda _: None
    return train.train(
        model, stream, steps, 2, str(workdir), evaluate, log=log, jit_compile=jit_compile
    )


class Killed(Exception):
    pass


def test_a_crash_right_after_a_checkpoint_loses_no_evaluation(tmp_path, monkeypatch):
    save = tf.train.CheckpointManager.save

    def save_then_die(self, *args, **kwargs):
        save(self, *args, **kwargs)
        raise Killed

    monkeypatch.setattr(tf.train.CheckpointManager, 'save', save_then_die)
    with pytest.raises(Killed):
        _run(tmp_path, 4)
    monkeypatch.setattr(tf.train.CheckpointManager, 'save', save)
    evals = _run(tmp_path, 4)
    assert [e['step'] for e in evals] == [2, 4]
    with open(tmp_path / 'evals.json') as f:
        assert [e['step'] for e in json.load(f)] == [2, 4]


def test_missing_evaluations_file_does_not_block_a_resume(tmp_path):
    _run(tmp_path, 2)
    os.remove(tmp_path / 'evals.json')
    logs = []
    evals = _run(tmp_path, 4, logs)
    assert [e['step'] for e in evals] == [4]  # Step 2's record is lost, the run is not...
    assert any('evaluations up to step 2 are lost' in line for line in logs)  # ...and it says so.


def test_evaluations_record_training_losses(tmp_path):
    evals = _run(tmp_path, 2)
    assert set(FixMatch.TRACKED) <= set(evals[0])
    assert all(np.isfinite(evals[0][name]) for name in FixMatch.TRACKED)


def test_predict_classes_is_predict_batch_by_batch():
    net = fakes.tiny_net()
    images = np.random.default_rng(0).integers(0, 256, (7, 2, 2, 1), np.uint8)
    probs = train.predict(net, images)
    predicted, confidence = train.predict_classes(net, images, batch_size=3)
    np.testing.assert_array_equal(predicted, probs.argmax(1))
    np.testing.assert_array_equal(confidence, probs.max(1))
    batches = [images[:4], images[4:]]  # Any iterable of batches, e.g. a stream.
    np.testing.assert_array_equal(train.predict(net, batches), probs)


def test_predict_does_not_keep_a_net_alive():
    net = fakes.tiny_net()
    probs = train.predict(net, np.zeros((3, 2, 2, 1), np.uint8))
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    ref = weakref.ref(net)
    del net
    gc.collect()
    assert ref() is None


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    _run(tmp_path, 4)  # Checkpoints at steps 2 and 4.
    (data_file,) = glob.glob(str(tmp_path / 'ckpt' / 'ckpt-4.data-*'))
    with open(data_file, 'r+b') as f:
        f.truncate(16)
    logs = []
    evals = _run(tmp_path, 6, logs)
    assert any('ckpt-4: cannot be restored' in line for line in logs), logs
    assert any('resumed from' in line and 'ckpt-2' in line for line in logs), logs
    assert [e['step'] for e in evals] == [2, 4, 6]


def test_leftovers_of_an_interrupted_checkpoint_are_removed(tmp_path):
    _run(tmp_path, 2)
    leftover = tmp_path / 'ckpt' / 'ckpt-4_temp'
    leftover.mkdir()
    (leftover / 'part-00000-of-00001.data-00000-of-00001').write_bytes(b'half')
    _run(tmp_path, 4)
    assert not leftover.exists()


def test_an_xla_compiled_step_trains_as_the_plain_one(tmp_path):
    keras.utils.set_random_seed(0)
    plain = _run(tmp_path / 'plain', 4)
    keras.utils.set_random_seed(0)
    compiled = _run(tmp_path / 'xla', 4, jit_compile=True)
    for a, b in zip(plain, compiled, strict=True):
        assert a['loss/total'] == pytest.approx(b['loss/total'], rel=1e-4)
