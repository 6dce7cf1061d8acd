"""The comparison algorithms by hand: one train step of Supervised, Pseudo-Labeling and
Mean Teacher on a net small enough to compute in NumPy."""

import numpy as np
import pytest

from libml import train
from libml.algorithms import MeanTeacher, PseudoLabel, Supervised
from tests import fakes

WD = 5e-4


def _softmax(logits):
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _log_softmax(logits):
    return np.log(_softmax(logits))


def _images(*sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, (n, 2, 2, 1)).astype(np.float32) for n in sizes]


def _step(model, batch):
    model.compile(optimizer=train.make_optimizer(0.03, 10))
    return {k: float(v) for k, v in model.train_step(batch).items()}


def test_supervised_with_class_weights():
    (x_l,) = _images(4)
    y_l = np.array([0, 1, 1, 1])
    weights = np.array([3.0, 1.0 / 3.0])
    model = Supervised(fakes.tiny_net, 2, wd=WD, class_weights=weights)
    logits, _ = fakes.tiny_net_forward(model.net, x_l)
    ce = -_log_softmax(logits)[np.arange(4), y_l]
    loss_xe = np.mean(weights[y_l] * ce)  # Each example weighted by its class.
    loss_wd = fakes.tiny_net_l2(model.net)
    result = _step(model, dict(x_l=x_l, y_l=y_l))
    assert result['loss/xe'] == pytest.approx(loss_xe, rel=1e-5)
    assert result['loss/total'] == pytest.approx(loss_xe + WD * loss_wd, rel=1e-5)
    assert model.views.unlabeled == ()  # Labeled images only.


def test_pseudo_label_masks_on_aligned_confidence_of_the_same_view():
    x_l, x_u = _images(2, 6)
    y_l = np.array([0, 1])
    target, wu = np.array([0.2, 0.8]), 2.0
    model = PseudoLabel(fakes.tiny_net, 2, wu=wu, rampup=0.0, p_target=target, wd=WD)
    logits, _ = fakes.tiny_net_forward(model.net, np.concatenate([x_l, x_u]))
    probs = _softmax(logits[2:])
    aligned = probs * target / 0.5  # p_model starts uniform
    aligned /= aligned.sum(1, keepdims=True)
    confidence = np.sort(aligned.max(1))
    model.threshold = float((confidence[2] + confidence[3]) / 2)
    mask = aligned.max(1) >= model.threshold
    loss_xe = -np.mean(_log_softmax(logits[:2])[np.arange(2), y_l])
    # The pseudo-label's cross-entropy on the very view it came from, over all 6 images.
    loss_xeu = -np.sum(_log_softmax(logits[2:])[np.arange(6), aligned.argmax(1)] * mask) / 6
    loss_wd = fakes.tiny_net_l2(model.net)
    result = _step(model, dict(x_l=x_l, y_l=y_l, x_u=(x_u,)))
    assert result['monitor/mask'] == pytest.approx(mask.mean())
    assert result['loss/xe'] == pytest.approx(loss_xe, rel=1e-4)
    assert result['loss/xeu'] == pytest.approx(loss_xeu, rel=1e-4)
    assert result['loss/total'] == pytest.approx(loss_xe + wu * loss_xeu + WD * loss_wd, rel=1e-4)


def test_mean_teacher_student_against_the_ema_teacher():
    x_l, x_teacher, x_student = _images(2, 4, 4)
    y_l = np.array([1, 0])
    model = MeanTeacher(fakes.tiny_net, 2, wu=50.0, rampup=0.0, wd=WD)
    # A teacher unlike the student, so that the test tells the two apart.
    teacher = [w * 1.5 + 0.1 for w in model.net.get_weights()]
    model.ema_net.set_weights(teacher)
    logits_teacher, _ = fakes.tiny_net_forward(model.ema_net, x_teacher)
    logits, _ = fakes.tiny_net_forward(model.net, np.concatenate([x_l, x_student]))
    loss_xe = -np.mean(_log_softmax(logits[:2])[np.arange(2), y_l])
    loss_xeu = np.mean((_softmax(logits_teacher) - _softmax(logits[2:])) ** 2)
    loss_wd = fakes.tiny_net_l2(model.net)
    result = _step(model, dict(x_l=x_l, y_l=y_l, x_u=(x_teacher, x_student)))
    assert result['loss/xe'] == pytest.approx(loss_xe, rel=1e-4)
    assert result['loss/xeu'] == pytest.approx(loss_xeu, rel=1e-4)
    assert result['loss/total'] == pytest.approx(loss_xe + 50.0 * loss_xeu + WD * loss_wd, rel=1e-4)


@pytest.mark.parametrize('algorithm', [PseudoLabel, MeanTeacher])
def test_unlabeled_weight_ramps_over_the_first_share_of_training(algorithm):
    # 10 steps, rampup 0.4: full weight from step 4 on.
    model = algorithm(fakes.tiny_net, 2, total_steps=10)
    model.compile(optimizer=train.make_optimizer(0.03, 10))
    (x,) = _images(2)
    batch = dict(x_l=x, y_l=np.array([0, 1]), x_u=(x,) * len(model.views.unlabeled))
    ramp = []
    for _ in range(6):
        ramp.append(float(model.train_step(batch)['monitor/wu']) / model.wu)
        for tracker in model.trackers.values():
            tracker.reset_state()
    np.testing.assert_allclose(ramp, [0, 0.25, 0.5, 0.75, 1, 1], atol=1e-6)
