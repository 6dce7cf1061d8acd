"""Supervised baseline: the labeled images only, weakly augmented (paper Table 3 row).

No unlabeled view is read; the loss is the (optionally class-weighted) cross-entropy of
the labeled batch plus coupled L2 weight decay.
"""

import tensorflow as tf

from libml import pipeline
from libml.algorithms import ops
from libml.algorithms.base import SemiSupervised, assign_all


class Supervised(SemiSupervised):
    TRACKED = ('loss/total', 'loss/xe', 'loss/wd')
    # As in the FixMatch code's baselines (the unlabeled images are not used).
    PAPER_SETTINGS = dict(alpha=1 / 3, t_min=0.5, steps_per_generation=2**16, uratio=1)
    views = pipeline.Views('weak', ())

    def train_step(self, data):
        x_l, y_l = data['x_l'], data['y_l']
        with tf.GradientTape() as tape:
            logits = self.net(x_l, training=True)
            loss_xe = self.labeled_loss(y_l, ops.cross_entropy(y_l, logits))
            loss_wd = self.weight_decay_loss()
            loss = loss_xe + self.wd * loss_wd
        self.apply_gradients(tape, loss)
        assign_all(self.ema_update())
        return self.track(loss_total=loss, loss_xe=loss_xe, loss_wd=loss_wd)
