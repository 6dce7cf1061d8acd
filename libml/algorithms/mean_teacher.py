"""Mean Teacher (Tarvainen & Valpola, 2017) as the FixMatch paper's baseline runs it.

Two weak views per unlabeled image: the teacher, the EMA copy of the network (the one
that is evaluated), predicts the first in training mode; the student, the trained
network, the second. The unlabeled loss is the squared error between their softmax
outputs (mean over classes and images, no gradient through the teacher), weighted by wu
= 50 ramped linearly from 0 over the first `rampup` share of training (0.4), as in the
FixMatch code's baseline. Labeled images and student views share one training-mode
pass. Distribution alignment, when on, aligns the teacher's prediction.
"""

import tensorflow as tf

from libml import pipeline
from libml.algorithms import ops
from libml.algorithms.base import HParam, SemiSupervised, assign_all


class MeanTeacher(SemiSupervised):
    TRACKED = (*SemiSupervised.TRACKED, 'monitor/wu')
    # As in the FixMatch code's baselines: 64 labeled + 64 unlabeled images per step.
    PAPER_SETTINGS = dict(alpha=1 / 3, t_min=0.5, steps_per_generation=2**16, uratio=1)
    HPARAMS = {
        'wu': HParam('Weight of the consistency loss after the ramp-up.', '>= 0', lambda v: v >= 0),
        'rampup': HParam(
            'Share of the training steps over which wu rises linearly from 0.',
            'in [0, 1]',
            lambda v: 0 <= v <= 1,
        ),
    }
    views = pipeline.Views('weak', ('weak', 'weak'))

    def __init__(self, make_net, num_classes, wu=50.0, rampup=0.4, **kwargs):
        super().__init__(make_net, num_classes, **kwargs)
        self.wu = wu
        self.rampup_steps = ops.rampup_steps(rampup, self.total_steps)

    def train_step(self, data):
        x_l, y_l = data['x_l'], data['y_l']
        x_teacher, x_student = data['x_u']
        n_l = tf.shape(x_l)[0]

        # Teacher: the EMA network on the first view, batch statistics, no gradient
        probs_teacher = tf.stop_gradient(tf.nn.softmax(self.ema_net(x_teacher, training=True)))
        targets = self.align(probs_teacher)

        with tf.GradientTape() as tape:
            logits = self.net(tf.concat([x_l, x_student], 0), training=True)

            # Supervised loss
            loss_xe = self.labeled_loss(y_l, ops.cross_entropy(y_l, logits[:n_l]))

            # Consistency: student on the second view against the teacher
            loss_xeu = tf.reduce_mean(ops.squared_error(targets, tf.nn.softmax(logits[n_l:])))

            # Coupled L2 weight decay; the consistency weight ramps up
            loss_wd = self.weight_decay_loss()
            wu = self.wu * ops.linear_rampup(self.optimizer.iterations, self.rampup_steps)
            loss = loss_xe + wu * loss_xeu + self.wd * loss_wd

        self.apply_gradients(tape, loss)
        assign_all(self.p_model_update(probs_teacher) + self.ema_update())
        return self.track(
            loss_total=loss, loss_xe=loss_xe, loss_xeu=loss_xeu, loss_wd=loss_wd, monitor_wu=wu
        )
