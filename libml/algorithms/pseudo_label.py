"""Pseudo-Labeling (Lee, 2013) as the FixMatch paper's baseline runs it.

One weak view per unlabeled image. Its own prediction, aligned to the target
distribution when alignment is on, gives a hard pseudo-label that counts where the
confidence reaches the threshold; the cross-entropy is taken on the same view's logits
and averaged over all unlabeled images. Its weight rises linearly from 0 over the first
`rampup` share of training (0.4 in the FixMatch code's baseline). One training-mode pass
over [x_l; x_u], as for FixMatch.
"""

import tensorflow as tf

from libml import pipeline
from libml.algorithms import ops
from libml.algorithms.base import HParam, SemiSupervised, assign_all


class PseudoLabel(SemiSupervised):
    TRACKED = (*SemiSupervised.TRACKED, 'monitor/mask', 'monitor/wu')
    # As in the FixMatch code's baselines: 64 labeled + 64 unlabeled images per step.
    PAPER_SETTINGS = dict(alpha=1 / 3, t_min=0.5, steps_per_generation=2**16, uratio=1)
    HPARAMS = {
        'threshold': HParam(
            'Aligned confidence a pseudo-label needs to count.', 'in [0, 1]', lambda v: 0 <= v <= 1
        ),
        'wu': HParam('Weight of the unlabeled loss after the ramp-up.', '>= 0', lambda v: v >= 0),
        'rampup': HParam(
            'Share of the training steps over which wu rises linearly from 0.',
            'in [0, 1]',
            lambda v: 0 <= v <= 1,
        ),
    }
    views = pipeline.Views('weak', ('weak',))

    def __init__(self, make_net, num_classes, threshold=0.95, wu=1.0, rampup=0.4, **kwargs):
        super().__init__(make_net, num_classes, **kwargs)
        self.threshold, self.wu = threshold, wu
        self.rampup_steps = ops.rampup_steps(rampup, self.total_steps)

    def train_step(self, data):
        x_l, y_l = data['x_l'], data['y_l']
        (x_u,) = data['x_u']
        n_l = tf.shape(x_l)[0]
        with tf.GradientTape() as tape:
            logits = self.net(tf.concat([x_l, x_u], 0), training=True)
            logits_u = logits[n_l:]

            # Supervised loss
            loss_xe = self.labeled_loss(y_l, ops.cross_entropy(y_l, logits[:n_l]))

            # Pseudo-labels: hard, from the view's own (aligned) prediction
            probs_u = tf.stop_gradient(tf.nn.softmax(logits_u))
            probs_aligned = self.align(probs_u)
            mask = tf.cast(tf.reduce_max(probs_aligned, axis=-1) >= self.threshold, tf.float32)

            # Unsupervised loss on the same view, divided by all unlabeled images
            pseudo_labels = tf.argmax(probs_aligned, axis=-1)
            loss_xeu = tf.reduce_mean(mask * ops.cross_entropy(pseudo_labels, logits_u))

            # Coupled L2 weight decay; the unlabeled weight ramps up
            loss_wd = self.weight_decay_loss()
            wu = self.wu * ops.linear_rampup(self.optimizer.iterations, self.rampup_steps)
            loss = loss_xe + wu * loss_xeu + self.wd * loss_wd

        self.apply_gradients(tape, loss)
        assign_all(self.p_model_update(probs_u) + self.ema_update())
        return self.track(
            loss_total=loss,
            loss_xe=loss_xe,
            loss_xeu=loss_xeu,
            loss_wd=loss_wd,
            monitor_mask=tf.reduce_mean(mask),
            monitor_wu=wu,
        )
